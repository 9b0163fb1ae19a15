"""Generate the bundled demo dataset (coe_runtime/demo/): invented dialogues, personas and scenes.

Everything here is written for this project: invented characters on an invented street, with
each utterance's emotion signalled by its wording (cue words per emotion) so that a small
randomly initialised model can learn it in a minute or two. Neutral is the largest class
(about 30 %), the six others share the rest. Each dialogue has a "mood" emotion that is more
frequent in it, and the scene and persona clues hint at that mood, so the clues carry signal.

    python bench/tools/make_demo_data.py            # rewrites coe_runtime/demo/{dialogues.jsonl,clues.json}

Deterministic (fixed seed): rerunning gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

SEED = 20240611
SPLITS = {"train": 40, "dev": 8, "test": 10}
EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MOODS = EMOTIONS[1:]

CAST = {
    "Mara": "Mara Quill, the night baker at the Harbor Lane bakery; blunt and practical, hates waste",
    "Jonah": "Jonah Pike, a delivery rider who jokes a lot and is always a little late",
    "Ines": "Ines Varga, the pharmacist next door; calm and precise, worries about her younger sister",
    "Theo": "Theo Brandt, a retired ferry captain; gruff, sentimental about the sea",
    "Lila": "Lila Okafor, an art student renting the flat upstairs; dramatic and enthusiastic",
    "Ruben": "Ruben Cask, the landlord of the whole row; stingy and short-tempered",
    "Noor": "Noor Haddad, a night-shift nurse; tired but kind, easily startled",
    "Pavel": "Pavel Sokol, who runs the chess club; pedantic and proud of his trophies",
    "Wren": "Wren Ashby, the teenage apprentice baker; curious and a bit nervous",
    "Dolores": "Dolores Finch, owner of the laundrette; loves gossip, warm-hearted",
    "Sami": "Sami Lind, a bus driver on the night route; laid-back and patient",
    "Agnes": "Agnes Moor, the local librarian; strict, squeamish about mess",
}

MOOD_NOTES = {
    "joy": "is in high spirits today after some good news",
    "sadness": "has been low since a recent loss",
    "anger": "is fed up and short-tempered today",
    "fear": "has been jumpy since a break-in on the street",
    "surprise": "keeps being caught off guard today",
    "disgust": "is squeamish and easily put off by dirt today",
}

SCENES = {
    "joy": [
        "{time} at the {place}; the street has just learned that the summer festival will go ahead.",
        "{time} at the {place}; a long-awaited prize has finally been announced.",
    ],
    "sadness": [
        "{time} at the {place}; an old neighbour's shop closed for good this week.",
        "{time} at the {place}; the friends are clearing out the room of someone who moved away.",
    ],
    "anger": [
        "{time} at the {place}; the landlord has raised the rent again without warning.",
        "{time} at the {place}; something valuable was broken and nobody admits to it.",
    ],
    "fear": [
        "{time} at the {place}; the power failed across the street and there were strange noises.",
        "{time} at the {place}; a stranger has been seen trying doors along the row.",
    ],
    "surprise": [
        "{time} at the {place}; unexpected visitors keep turning up with news.",
        "{time} at the {place}; a box of forgotten things has just been found in the cellar.",
    ],
    "disgust": [
        "{time} at the {place}; the fridge broke down over the weekend and everything spoiled.",
        "{time} at the {place}; a drain overflowed and the floor is a mess.",
    ],
}
TIMES = ["Early morning", "Late afternoon", "A rainy evening", "Midnight", "A quiet Sunday", "Lunchtime"]

THINGS = [
    "bread order",
    "new oven",
    "bicycle",
    "radio",
    "ferry ticket",
    "birthday cake",
    "spare key",
    "paint set",
    "chess trophy",
    "umbrella",
    "delivery van",
    "laundry basket",
    "guitar",
    "map",
]
PLACES = [
    "bakery",
    "harbor",
    "pharmacy",
    "laundrette",
    "stairwell",
    "library",
    "bus depot",
    "chess club",
    "market",
    "rooftop",
    "cellar",
    "kitchen",
]
FOODS = ["soup", "sandwich", "fish pie", "milk", "cheese", "stew", "pastry", "coffee", "salad"]
HOURS = ["six", "seven", "noon", "half past four", "nine", "eight", "ten"]

TEMPLATES = {
    "joy": [
        "Yes! The {thing} is finally ours, I'm so happy!",
        "This is wonderful news, {name}, I could dance all night!",
        "Hooray! We did it, best day ever!",
        "I love it, {name}! What a fantastic gift.",
        "Ha! I'm thrilled, the {place} looks amazing!",
        "Oh, how lovely, I'm delighted for you both!",
        "We won! I'm laughing so hard, this is great!",
        "Brilliant, {name}, you made my whole week!",
    ],
    "sadness": [
        "I miss {name} so much, it still hurts.",
        "I'm heartbroken, the {thing} is gone forever.",
        "Nobody came to the {place} today. I feel so lonely.",
        "It's over, I lost everything I cared about.",
        "Sorry, I just can't stop crying about it.",
        "I feel so empty since {name} moved away.",
        "The old {place} closed for good, and it breaks my heart.",
        "I tried my best and still failed, I'm so down.",
    ],
    "anger": [
        "How dare you touch my {thing}! I'm furious!",
        "Stop lying to me, {name}! I've had enough!",
        "You broke the {thing} again?! I'm so angry with you!",
        "Get out of my {place} right now!",
        "This is outrageous, who keeps stealing my {thing}?!",
        "I'm sick of your excuses, {name}!",
        "Don't you dare shout at me in my own {place}!",
        "Enough! Shut up and listen for once, you selfish fool!",
    ],
    "fear": [
        "I'm scared, did you hear that noise in the {place}?",
        "Please don't leave me alone, I'm terrified.",
        "Oh no, what if the {thing} catches fire? I'm so afraid.",
        "My hands are shaking, someone is following us.",
        "Hide! I think there's a stranger by the {place}.",
        "I'm frightened, the lights in the {place} just went out.",
        "Help! Something is scratching at the door!",
        "I'm so nervous about walking past the {place} at night.",
    ],
    "surprise": [
        "Wait, what?! You bought a {thing}?",
        "No way! {name} is here already?",
        "Whoa, I didn't expect that at all!",
        "Seriously? The {place} is closed today?",
        "Really? You've never seen the {place} before?",
        "What?! Since when do you own a {thing}?",
        "Oh my, you're kidding, {name} got married?!",
        "Huh? The {thing} was under the bed the whole time?",
    ],
    "disgust": [
        "Ew, this {food} smells rotten, gross!",
        "Yuck, there's a hair in my {food}!",
        "Ugh, don't lick the {thing}, that's disgusting.",
        "That's nasty, the {place} floor is covered in slime.",
        "Gross, {name} left mouldy {food} in the fridge again.",
        "Eww, it's sticky and it smells like old socks.",
        "Bleh, this {food} tastes like dirty dishwater.",
        "Revolting, someone spat on the {place} steps.",
    ],
    "neutral": [
        "The {thing} is on the shelf by the {place} door.",
        "I'll meet you at the {place} around {hour}.",
        "Can you pass me the {thing}, please?",
        "{name} said the bus leaves at {hour}.",
        "Okay, let's check the list again.",
        "I think the {place} opens at {hour} on Tuesdays.",
        "Sure, I'll bring the {thing} tomorrow.",
        "We need two more boxes for the {place}.",
        "Did you put the {food} in the fridge?",
        "Right, first the {place}, then home.",
    ],
}


def pick_label(rng: random.Random, mood: str) -> str:
    r = rng.random()
    if r < 0.30:
        return "neutral"
    if r < 0.60:
        return mood
    return rng.choice([m for m in MOODS if m != mood])


def make_dialogue(rng: random.Random, split: str, number: int) -> tuple[list[dict], dict, str]:
    dialogue_id = f"{split}-{number:02d}"
    mood = MOODS[number % len(MOODS)] if split == "train" else rng.choice(MOODS)
    speakers = rng.sample(sorted(CAST), 3 if rng.random() < 0.3 else 2)
    n = rng.randint(4, 8)
    rows, last = [], None
    for k in range(n):
        speaker = rng.choice([s for s in speakers if s != last])
        last = speaker
        label = pick_label(rng, mood)
        others = [s for s in CAST if s != speaker]
        text = rng.choice(TEMPLATES[label]).format(
            thing=rng.choice(THINGS),
            place=rng.choice(PLACES),
            food=rng.choice(FOODS),
            hour=rng.choice(HOURS),
            name=rng.choice(others),
        )
        rows.append(
            {
                "dialogue_id": dialogue_id,
                "utterance_id": f"demo-{dialogue_id}-u{k}",
                "speaker": speaker,
                "text": text,
                "label": label,
                "split": split,
            }
        )
    personas = {}
    for s in speakers:
        note = f"; {MOOD_NOTES[mood]}" if rng.random() < 0.6 else ""
        personas[s] = CAST[s] + note + "."
    scene = rng.choice(SCENES[mood]).format(time=rng.choice(TIMES), place=rng.choice(PLACES))
    return rows, personas, scene


def generate() -> tuple[list[dict], dict]:
    rng = random.Random(SEED)
    rows: list[dict] = []
    clues = {
        "version": 1,
        "personas": {},
        "scenes": {},
        "meta": {"source": "bench/tools/make_demo_data.py", "seed": SEED},
    }
    for split, count in SPLITS.items():
        for number in range(1, count + 1):
            d_rows, personas, scene = make_dialogue(rng, split, number)
            rows += d_rows
            clues["personas"][d_rows[0]["dialogue_id"]] = personas
            clues["scenes"][d_rows[0]["dialogue_id"]] = scene
    return rows, clues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "coe_runtime" / "demo"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, clues = generate()
    (out / "dialogues.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "clues.json").write_text(json.dumps(clues, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for split in SPLITS:
        labels = Counter(r["label"] for r in rows if r["split"] == split)
        print(split, sum(labels.values()), dict(sorted(labels.items())))


if __name__ == "__main__":
    main()
