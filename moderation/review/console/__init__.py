"""``moderation console``: the reviewers' web app — a live queue, decisions, an overview with charts.

Server-rendered (aiohttp + Jinja2 templates + inline SVG charts drawn here): no front-end build chain,
nothing for a reviewer's browser to run but a form.
"""
