"""SYNTHETIC social-media comment spam (and a few hard-negative hams), generated from templates.

The only real spam corpus we have is 2011 UK SMS spam; comment spam on a social platform looks
different (channel pushes, follow-for-follow, crypto/giveaway scams, "DM me", promo codes). These
texts are written by us, are marked ``synthetic`` wherever they are used, go to train/val only and
never into any test split, so no reported metric is computed on them.

Deterministic: ``generate()`` always returns the same list for the same ``seed``.
"""

from __future__ import annotations

import random

SPAM_TEMPLATES: tuple[str, ...] = (
    "Check out my channel {link} {emoji} new videos every day!!",
    "sub to my channel and i'll sub back {emoji} {link}",
    "Follow me and I follow back 100% {emoji} #f4f #followforfollow",
    "f4f? follow me i follow back instantly {emoji}",
    "Want {n}k followers FAST? Visit {link} {emoji}",
    "Get {n}000 real followers for only ${price} at {link}",
    "I made ${money} last week trading {coin} with this bot, DM me to learn how {emoji}",
    "{coin} GIVEAWAY {emoji} send {small} {coin} to {wallet} and get {big} {coin} back! Limited time!",
    "Elon is giving away {big} {coin}!! Claim yours now at {link} {emoji}",
    "Invest ${price} and get ${money} in 7 days guaranteed. DM me now {emoji}",
    "Congratulations! You have been selected to win a {prize}. Claim at {link}",
    "You won a {prize}!! Click {link} to claim before midnight {emoji}",
    "DM me for a collab {emoji} promo available, link in bio",
    "Hey babe {emoji} check my profile for something special {link}",
    "Hot singles in your area want to meet you {emoji} {link}",
    "Use code {code} for {pct}% OFF everything at {shop} {emoji} {link}",
    "{pct}% OFF today only!! Use promo code {code} at checkout {link}",
    "Earn ${money}/day working from home, no experience needed. Apply: {link}",
    "I'm a {job} and I earn ${money} a month from home, ask me how {emoji}",
    "Free {prize} giveaway!! Like, share and follow @{handle} to enter {emoji}",
    "Cheap {product} best price guaranteed, order now {link}",
    "Buy {product} online no prescription needed {link}",
    "Join our Telegram for daily {coin} signals {emoji} {tme}",
    "Join my Telegram group for free betting tips, 98% win rate {tme}",
    "Best {product} deals of the year!!! Shop now at {link} {emoji}{emoji}",
    "promote your music/video to {n}M real listeners, DM @{handle} {emoji}",
    "Your account will be suspended! Verify your details here: {link}",
    "Nice post! Btw I'm giving away {prize}s to my first {n}00 followers {emoji} {link}",
    "Recover your hacked account or lost {coin} fast, contact @{handle} on Instagram",
    "Looking for a sugar daddy? Message me on WhatsApp {phone} {emoji}",
    "Make money online {emoji} {emoji} {link} {link}",
    "{emoji} FREE {prize} {emoji} just click the link in my bio {emoji}",
    "Need likes? {n}k likes for ${price} {emoji} DM me",
    "Great content! Check out my page for {product} at wholesale price {link}",
    "Text {code} to {short} to win a {prize}! T&Cs apply",
    "Limited offer: {product} {pct}% off, only {n} left!! {link}",
)

HAM_TEMPLATES: tuple[str, ...] = (
    "Just read this article about {topic}, really interesting: {link}",
    "Does anyone know a good {product} shop near {city}? Mine closed down",
    "Our {topic} meetup is on Thursday at 7, see you there!",
    "Thanks for the follow! Loved your post about {topic}",
    "Congrats on the new job!! So happy for you {emoji}",
    "Here's the link to the slides from today's talk on {topic}: {link}",
    "Anyone else watching the game tonight? {emoji}",
    "I finally tried that {product} you recommended and it's great",
    "The {topic} report is out, summary thread below",
    "Happy birthday {name}!! Have an amazing day {emoji}",
    "Can you DM me the address for the party on Saturday?",
    "Our bakery is open again after the holidays, come say hi {emoji}",
    "Lost my keys somewhere near {city} station, if anyone finds them please let me know",
    "New episode of our {topic} podcast is up, thanks for listening everyone",
)

FILL: dict[str, tuple[str, ...]] = {
    "link": (
        "bit.ly/3xYz9Q",
        "tinyurl.com/freegift22",
        "www.best-deals-now.shop",
        "http://earn-fast.biz/start",
        "https://t.co/aB12xYz",
        "cutt.ly/promo",
        "http://claim-prize.win",
        "www.followers4u.net",
        "https://crypto-double.io",
        "linktr.ee/hotdeals",
    ),
    "tme": ("t.me/cryptosignalsVIP", "t.me/freetips247", "https://t.me/+AbCdEfG"),
    "emoji": ("🔥", "💰", "🚀", "👉", "💯", "🎁", "😍", "✅", "💸", "❤️"),
    "coin": ("BTC", "ETH", "bitcoin", "USDT", "DOGE", "crypto"),
    "wallet": ("0x3fA9c2...e81", "bc1qxy2kgdygjrsqtzq2n0yrf", "the wallet in my bio"),
    "prize": ("iPhone 15", "$1000 gift card", "PS5", "Amazon voucher", "MacBook", "free cruise"),
    "code": ("SAVE50", "FREE20", "WIN", "BONUS100", "VIP30"),
    "shop": ("ShopNow", "DealHub", "MegaStore", "TrendyWear"),
    "product": ("sneakers", "watches", "viagra", "followers", "sunglasses", "weight loss pills", "handbags"),
    "job": ("single mom", "student", "nurse", "retired teacher"),
    "handle": ("promo_king", "cryptoqueen_official", "hacker_recovery", "growth.guru"),
    "phone": ("+1 555 0199", "+44 7700 900123", "+234 803 555 0100"),
    "short": ("80082", "87121", "69669"),
    "topic": ("climate policy", "machine learning", "the local elections", "urban gardening", "jazz history"),
    "city": ("Leeds", "Austin", "Lyon", "Melbourne"),
    "name": ("Sam", "Priya", "Jonas", "Maria"),
    "n": ("1", "2", "5", "10", "50"),
    "price": ("5", "9.99", "19", "49", "250"),
    "money": ("500", "2,000", "5000", "10k"),
    "small": ("0.1", "0.5", "1"),
    "big": ("1", "2", "5", "10"),
    "pct": ("30", "50", "70", "90"),
}


def _fill(template: str, rng: random.Random) -> str:
    out = template
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        key = out[start + 1 : end]
        out = out[:start] + rng.choice(FILL[key]) + out[end + 1 :]
    return out


def _vary(text: str, rng: random.Random) -> str:
    """Casing and punctuation noise so the head does not memorise exact strings."""
    r = rng.random()
    if r < 0.15:
        text = text.upper()
    elif r < 0.35:
        text = text.lower()
    if rng.random() < 0.2:
        text += rng.choice(("!!", "!!!", " 🙏", " pls", " asap"))
    return text


def generate(n_spam: int = 1500, n_ham: int = 300, seed: int = 13) -> list[tuple[str, str]]:
    """``(text, "spam" | "ham")`` pairs; duplicates removed, order fixed by ``seed``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for templates, label, count in ((SPAM_TEMPLATES, "spam", n_spam), (HAM_TEMPLATES, "ham", n_ham)):
        made, tries = 0, 0
        while made < count and tries < count * 20:
            tries += 1
            text = _vary(_fill(rng.choice(templates), rng), rng)
            if text not in seen:
                seen.add(text)
                out.append((text, label))
                made += 1
    return out
