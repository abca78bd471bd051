"""SYNTHETIC social-media comment spam (and a few hard-negative hams), generated from templates.

Our real spam (2011 UK SMS, Instagram finance scams, crypto X posts) barely covers comment spam on a
video platform (channel pushes, sub4sub, "listen to my beats"); these templates add it, alongside
follow-for-follow, crypto/giveaway scams, "DM me" and promo codes, and hard-negative hams that talk
about subscribing and channels without promoting anything. These texts are written by us, are marked
``synthetic`` wherever they are used, go to train/val only and never into any test split (``load_corpus``
also drops any that collide with a test text), so no reported metric is computed on them.

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

# Video-platform self-promotion: the comment spam our real data sets (SMS, finance scams, crypto X)
# barely cover. With and without emoji, links and handles, so no single token gives it away.
PROMO_TEMPLATES: tuple[str, ...] = (
    "check out my channel {emoji}",
    "Check out my channel, I post {vidtype} every {day}",
    "check out my channel!! {vidtype} every week {emoji}{emoji}",
    "subscribe to me pls {emoji}",
    "Subscribe to my channel, I'm trying to hit {n}k subs {emoji}",
    "pls subscribe to my channel i'm only at {small_n} subscribers",
    "sub4sub? {emoji}",
    "sub4sub anyone?? comment done when you subbed and i'll sub back",
    "Sub 4 sub!! I always sub back {emoji}",
    "anyone wanna do sub for sub? reply and I'll sub back",
    "I make beats, listen on my page {emoji}",
    "i make {genre} beats, go listen on my page and tell me what u think",
    "I'm an upcoming {genre} artist, my new track is on my channel {emoji} {link}",
    "new {genre} song out now on my channel!! go stream it {emoji}",
    "watch my latest vlog {emoji}",
    "Watch my latest vlog, it's about {vlog_topic} {emoji} {link}",
    "just dropped a new vlog about {vlog_topic}, link on my profile",
    "first! visit my channel {emoji}",
    "FIRST!!! now go visit my channel {emoji}",
    "first comment! while you're here check out my channel",
    "If you liked this video you'll love my channel {emoji}",
    "Nice video! Can you check out my channel too? I do {vidtype}",
    "Great vid bro, I make similar {vidtype} on my channel, come check it out {emoji}",
    "Hey guys I just started a {vidtype} channel, would mean a lot if you subscribed {emoji}",
    "Who's watching in {year}? Also pls sub to my channel {emoji}",
    "Road to {n}k subs, help me out by subscribing {emoji}",
    "I'm giving away {prize} when I hit {n}k subscribers, subscribe to enter {emoji}",
    "Click my profile picture for {vidtype} {emoji}",
    "Don't read my name {emoji}",
    "don't look at my name, it's a {vidtype} channel {emoji}",
    "Anyone who likes this comment and subscribes gets a shoutout on my channel {emoji}",
    "Promote your channel here {emoji} sub to everyone who replies",
    "Can I get {small_n} subs before the end of the day? {emoji}",
    "my {vidtype} channel needs some love, go subscribe {link}",
    "Listen to my new mixtape on {platform} {emoji} {link}",
    "follow me on {platform} for more {vidtype} {emoji} @{handle}",
    "Love this! I upload {vidtype} daily, you might like my channel {emoji}",
    "Hey, I made a reaction video to this, go watch it on my channel {emoji}",
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

# Genuine comments that mention subscribing, channels and videos: the hard negatives for PROMO_TEMPLATES.
VIDEO_HAM_TEMPLATES: tuple[str, ...] = (
    "great video, just subscribed {emoji}",
    "Great video! Just subscribed, keep it up",
    "what camera do you use for your channel?",
    "What mic do you use? The audio on your channel is always so clean",
    "the part at {ts} made me laugh {emoji}",
    "{ts} had me dying {emoji}",
    "The explanation at {ts} finally made it click for me, thank you",
    "been subscribed since {year} and this is still my favourite channel",
    "I subscribed after your {vlog_topic} video and never regretted it",
    "Your channel helped me so much with {vlog_topic}, thank you",
    "Can you make a video about {vlog_topic} next?",
    "Who else is watching this in {year}? {emoji}",
    "This channel deserves way more subscribers",
    "How do you edit your videos? They look amazing",
    "I showed this video to my {relative} and now they're subscribed too {emoji}",
    "The {genre} beat in the background at {ts} is so good, what's it called?",
    "Thanks for the shoutout at {ts}!! made my day",
    "I never comment but this video was really good",
    "Love your vlogs, the one about {vlog_topic} was the best",
    "unsubscribed? no way, this is the best channel on {platform}",
    "Came here from your {vlog_topic} video, great stuff {emoji}",
    "I was about to unsubscribe but this video changed my mind lol",
    "first time watching your channel, the editing is great",
    "Sub count went up so fast this year, congrats on {n}k {emoji}",
    "why does this video only have {small_n} views, it's so good",
    "Who's here after the {vlog_topic} video?",
    "ngl the ending at {ts} got me {emoji}",
    "I've watched this video {small_n} times and it's still funny",
    "Is the link to the {product} in the description? Can't find it",
    "just subscribed, hope you make more {vidtype}",
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
    "vidtype": (
        "gaming videos", "Minecraft builds", "cooking videos", "makeup tutorials", "reaction videos",
        "vlogs", "guitar covers", "shorts", "Fortnite montages", "study with me videos", "drawing timelapses",
    ),
    "genre": ("trap", "drill", "lofi", "hip hop", "rap", "R&B", "EDM", "afrobeats"),
    "vlog_topic": (
        "my trip to Japan", "moving out", "a day in my life", "my morning routine", "budget travel",
        "learning to skate", "my first apartment", "camping in the rain", "sourdough baking",
    ),
    "platform": ("YouTube", "TikTok", "Twitch", "SoundCloud", "Spotify", "Instagram"),
    "day": ("day", "Monday", "weekend", "Friday"),
    "year": ("2024", "2025", "2026"),
    "small_n": ("10", "12", "20", "37", "50", "100"),
    "ts": ("3:20", "1:45", "0:58", "7:12", "12:03", "4:30", "10:15"),
    "relative": ("mum", "dad", "little brother", "sister", "grandma"),
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


def _key(text: str) -> str:
    """Texts that differ only in case, digits or punctuation count as one (the split and dedupe key)."""
    from moderation.training.data import dedupe_key

    return dedupe_key(text)


def generate(n_spam: int = 1500, n_ham: int = 500, seed: int = 13) -> list[tuple[str, str]]:
    """``(text, "spam" | "ham")`` pairs; near-duplicates removed, order fixed by ``seed``.

    Spam is drawn from SPAM_TEMPLATES and PROMO_TEMPLATES (video self-promotion) alike, ham from
    HAM_TEMPLATES and VIDEO_HAM_TEMPLATES (genuine comments about subscribing/channels/videos) alike.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    kinds = (
        (SPAM_TEMPLATES, PROMO_TEMPLATES, "spam", n_spam),
        (HAM_TEMPLATES, VIDEO_HAM_TEMPLATES, "ham", n_ham),
    )
    for first, second, label, count in kinds:
        made, tries = 0, 0
        while made < count and tries < count * 20:
            tries += 1
            templates = first if rng.random() < 0.5 else second
            text = _vary(_fill(rng.choice(templates), rng), rng)
            key = _key(text)
            if key not in seen:
                seen.add(key)
                out.append((text, label))
                made += 1
    return out
