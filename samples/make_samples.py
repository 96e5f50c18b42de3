"""Writes the bundled sample data: customer-support messages in four classes.

    python samples/make_samples.py          # rewrites samples/train.csv, eval.csv and archive/*.parquet

Deterministic (fixed seed). Sentences are composed from per-class fragments plus neutral filler, so the task
is learnable but not keyword-trivial: some fillers mention words of other classes.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

OPENERS = ["Hi,", "Hello team,", "Good morning.", "Hey there,", "Dear support,", "Hi again,", "", "Quick question:",
           "Hello,", "To whom it may concern,"]
CLOSERS = ["Thanks.", "Thank you in advance.", "Regards, Dana", "Please advise.", "Cheers, Tom", "", "Best, Priya",
           "Appreciate the help!", "Looking forward to your reply.", "Kind regards, M. Ortiz"]
FILLER = [
    "I have been a customer for three years.", "This is the second time I am writing about this.",
    "My order number is in the subject line.", "I tried the help center first.",
    "It is fairly urgent for our team.", "Nothing else has changed on my side.",
    "I am writing from my work address.", "A colleague had the same issue last month.",
]

TOPICS = {
    "billing": [
        "I was charged twice for my {plan} subscription this month.",
        "The invoice for {month} shows an amount I do not recognise.",
        "Can you refund the last payment? I cancelled before the renewal date.",
        "My credit card was declined although the balance is fine.",
        "Please send a corrected invoice with our VAT number on it.",
        "Why did the price of the {plan} plan go up without notice?",
        "I need a receipt for the payment made on {month} 12 for my expense report.",
        "The discount code was not applied at checkout and I paid full price.",
        "How do I switch from monthly to annual billing?",
        "There is a pending charge on my statement from your company.",
    ],
    "shipping": [
        "My package was supposed to arrive on {day} but the tracking has not moved.",
        "The parcel was delivered to the wrong address.",
        "The box arrived damaged and two items were broken.",
        "Can I change the delivery address for order {order}?",
        "The courier says the parcel was left at the door, but nothing is here.",
        "How long does express delivery to {city} usually take?",
        "I received the wrong size and need to return it for an exchange.",
        "Tracking shows the shipment stuck in customs in {city} for a week.",
        "Only half of my order arrived; the rest is missing.",
        "Do you ship internationally to {city}?",
    ],
    "technical": [
        "The app crashes every time I open the settings page on {device}.",
        "I cannot sync my files since the last update.",
        "The export to PDF produces a blank page.",
        "After the upgrade, the dashboard loads very slowly on {device}.",
        "I get error code {code} when I try to upload a photo.",
        "The API returns a 500 error for requests with large payloads.",
        "Notifications stopped working on my {device}.",
        "The search results are empty even for items I know exist.",
        "The integration with our calendar fails with a timeout.",
        "Video playback stutters and then the player freezes.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives.",
        "Please delete my account and all personal data.",
        "How do I add a second user to our team account?",
        "I want to change the email address on my profile.",
        "My account was locked after too many login attempts.",
        "Someone logged into my account from {city}; I think it was hacked.",
        "Can I merge my two accounts into one?",
        "Two-factor authentication codes are not accepted on {device}.",
        "I need to transfer ownership of the workspace to a colleague.",
        "The username I want is taken by an inactive account.",
    ],
}
SLOTS = {
    "plan": ["Pro", "Basic", "Team", "Enterprise", "Family"],
    "month": ["January", "March", "May", "August", "October", "December"],
    "day": ["Monday", "Tuesday", "Friday", "the 14th", "the weekend"],
    "order": ["#48213", "#90117", "A-5521", "#33019", "B-1207"],
    "city": ["Lisbon", "Toronto", "Osaka", "Nairobi", "Berlin", "Lima"],
    "device": ["my iPhone", "Android", "the Windows app", "a Chromebook", "the iPad"],
    "code": ["E-403", "0x80070005", "ERR_TIMEOUT", "502", "E-17"],
}


def fill(template: str, rng: random.Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in SLOTS.items()})


def make_doc(label: str, rng: random.Random) -> str:
    parts = [rng.choice(OPENERS), fill(rng.choice(TOPICS[label]), rng)]
    if rng.random() < 0.6:
        parts.append(rng.choice(FILLER))
    if rng.random() < 0.35:
        parts.append(fill(rng.choice(TOPICS[label]), rng))
    parts.append(rng.choice(CLOSERS))
    return " ".join(p for p in parts if p)


def make_rows(n: int, rng: random.Random) -> list[tuple[str, str]]:
    labels = sorted(TOPICS)
    return [(make_doc(lab, rng), lab) for lab in (labels[i % len(labels)] for i in range(n))]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def write_archive(directory: Path, rng: random.Random) -> None:
    """Three unlabelled Parquet shards to score, with a few bad rows (null / empty text) on purpose."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    doc_id = 0
    for shard in range(3):
        texts = [make_doc(rng.choice(sorted(TOPICS)), rng) for _ in range(40)]
        if shard == 1:
            texts[5] = None
            texts[17] = ""
        ids = list(range(doc_id, doc_id + len(texts)))
        doc_id += len(texts)
        table = pa.table({"doc_id": ids, "text": texts, "source": [f"inbox-{shard}"] * len(texts)})
        pq.write_table(table, directory / f"part-{shard:04d}.parquet", row_group_size=16)


def main() -> None:
    rng = random.Random(20261125)
    rows = make_rows(480, rng)
    rng.shuffle(rows)
    write_csv(HERE / "train.csv", rows[:360])
    write_csv(HERE / "eval.csv", rows[360:])
    write_archive(HERE / "archive", rng)


if __name__ == "__main__":
    main()
