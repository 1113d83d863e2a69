"""Generated dialogue episodes for the tiny dialogue LM and the memory benchmark (issue 7).

Nothing here is copied from SirLLM's data (its repository has no licence): every episode is built from
the templates and word lists below by a seeded `random.Random`. A dialogue is a list of turns; a turn
is one user line and the bot's reply, the unit at which the memory evicts (SirLLM's "round"):

    user: please buy some lemons on your way home .
    bot: ok , i will remember that .

Kinds of turns and episodes:
- grocery: an item turn, ~20 distractor turns, then "what did i ask you to buy ?" (the benchmark task).
  The item is drawn uniformly, so an LM can only name it from its context: an induction/copy skill,
  which the training mix teaches with many such key -> question pairs (appointments, preferences).
- distractors: chit-chat, appointments and preferences (stated, and in training later asked back).
- repeat after me: random words the bot copies back (training only: the copy skill, learned fast).
- rock-paper-scissors: the user's move each round, from players whose preferred move switches mid-game.
- general text: docstrings of the installed `docutils` package, only from its files that declare
  themselves public domain (docutils' COPYING.txt), one sentence per user line.

The word lists keep grocery items out of every other template, so at the recall question the item turn
is the only place in the context that names a grocery.
"""
import ast
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

ITEMS = ("apples", "bananas", "lemons", "oranges", "grapes", "pears", "cherries", "carrots", "potatoes",
         "onions", "garlic", "tomatoes", "cucumbers", "lettuce", "spinach", "broccoli", "mushrooms",
         "peppers", "beans", "rice", "pasta", "bread", "butter", "cheese", "milk", "yogurt", "eggs",
         "flour", "sugar", "salt", "honey", "coffee", "tea", "juice", "cereal", "oats", "chicken",
         "salmon", "tuna", "bacon", "sausages", "noodles", "lentils", "peanuts", "almonds", "raisins",
         "cookies", "chocolate", "jam", "vinegar", "mustard", "ketchup", "olives", "avocados", "melons",
         "peaches", "plums", "pineapple", "strawberries", "blueberries")
NAMES = ("anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "iris", "jack", "kate", "leo",
         "maya", "nina", "oscar", "paul", "rosa", "sam", "tom", "vera")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TIMES = ("nine", "ten", "eleven", "noon", "two", "three", "four", "five", "six", "seven")
APPOINTMENTS = ("dentist", "doctor", "haircut", "meeting", "interview", "yoga class", "piano lesson",
                "car service", "eye test", "team call")
PREFERENCES = {"colour": ("red", "blue", "green", "yellow", "purple", "black", "white", "orange"),
               "sport": ("tennis", "football", "swimming", "running", "cycling", "skiing", "golf", "chess"),
               "animal": ("cats", "dogs", "horses", "owls", "foxes", "whales", "rabbits", "tigers"),
               "season": ("spring", "summer", "autumn", "winter"),
               "city": ("paris", "rome", "tokyo", "lima", "oslo", "cairo", "berlin", "madrid")}
PLACES = ("the park", "the library", "the museum", "the beach", "the office", "the station", "the gym",
          "the garden", "the cinema", "the river")
ACTIVITIES = ("read a book", "watched a film", "went for a walk", "cleaned the kitchen", "called my sister",
              "fixed the bike", "painted the fence", "played chess", "wrote some letters", "slept late")
WEATHER = ("sunny", "rainy", "cold", "windy", "warm", "cloudy", "foggy", "hot")
MOVES = ("rock", "paper", "scissors")
BEATS = {"rock": "paper", "paper": "scissors", "scissors": "rock"}  # move -> the move that beats it

GROCERY_QUESTION = "what did i ask you to buy ?"
GROCERY_ANSWER = "you asked me to buy"


@dataclass
class Turn:
    user: str
    bot: str
    kind: str = "chat"  # "item": the grocery item turn (the oracle keeps it); "recall": answered from context

    def text(self) -> str:
        return f"user: {self.user}\nbot: {self.bot}\n"


@dataclass
class Episode:
    turns: list[Turn]
    answer: str = ""                                   # grocery: the item; rps: unused
    candidates: list[str] = field(default_factory=list)  # grocery: answer + 3 other items, shuffled

    def text(self) -> str:
        return "".join(t.text() for t in self.turns)


def chit_chat(rng: random.Random) -> Turn:
    templates = (
        lambda: (f"yesterday i {rng.choice(ACTIVITIES)} with {rng.choice(NAMES)} .", "that sounds nice ."),
        lambda: (f"it is {rng.choice(WEATHER)} today near {rng.choice(PLACES)} .", "thanks for telling me ."),
        lambda: (f"{rng.choice(NAMES)} met {rng.choice(NAMES)} at {rng.choice(PLACES)} .", "how lovely ."),
        lambda: (f"do you think it will be {rng.choice(WEATHER)} on {rng.choice(DAYS)} ?",
                 f"it may be {rng.choice(WEATHER)} ."),
        lambda: (f"i {rng.choice(ACTIVITIES)} on {rng.choice(DAYS)} .", "good for you ."),
        lambda: (f"tell me something about {rng.choice(PLACES)} .", f"{rng.choice(PLACES)} is nice in the morning ."),
    )
    user, bot = rng.choice(templates)()
    return Turn(user, bot)


def appointment(rng: random.Random) -> tuple[Turn, Turn]:
    """A statement and the question that asks it back."""
    what, day, time = rng.choice(APPOINTMENTS), rng.choice(DAYS), rng.choice(TIMES)
    return (Turn(f"my {what} is on {day} at {time} .", "noted ."),
            Turn(f"when is my {what} ?", f"your {what} is on {day} at {time} .", kind="recall"))


def preference(rng: random.Random) -> tuple[Turn, Turn]:
    topic = rng.choice(sorted(PREFERENCES))
    value = rng.choice(PREFERENCES[topic])
    return (Turn(f"my favourite {topic} is {value} .", "i will keep that in mind ."),
            Turn(f"what is my favourite {topic} ?", f"your favourite {topic} is {value} .", kind="recall"))


def item_turn(rng: random.Random, item: str) -> Turn:
    user = rng.choice((f"please buy {item} on your way home .", f"i need you to buy {item} today .",
                       f"remember to buy {item} at the shop .", f"we are out of it , please buy {item} ."))
    return Turn(user, "ok , i will remember that .", kind="item")


def distractors(rng: random.Random, n: int, ask_back: bool) -> list[Turn]:
    """n turns of chit-chat, appointments and preferences; with ask_back, some facts are asked later."""
    turns, pending = [], []
    while len(turns) < n:
        r = rng.random()
        if pending and ask_back and r < 0.25:
            turns.append(pending.pop(rng.randrange(len(pending))))
        elif r < 0.5:
            turns.append(chit_chat(rng))
        else:
            stated, asked = (appointment if r < 0.75 else preference)(rng)
            turns.append(stated)
            pending.append(asked)
    return turns


def grocery_episode(rng: random.Random, n_distractors: int = 20, ask_back: bool = False) -> Episode:
    """Item turn, n distractor turns, then the recall question (answered, so the LM can train on it)."""
    item = rng.choice(ITEMS)
    others = rng.sample([i for i in ITEMS if i != item], 3)
    candidates = others + [item]
    rng.shuffle(candidates)
    turns = [item_turn(rng, item), *distractors(rng, n_distractors, ask_back),
             Turn(GROCERY_QUESTION, f"{GROCERY_ANSWER} {item} .", kind="recall")]
    return Episode(turns, answer=item, candidates=candidates)


@dataclass
class Player:
    """A rock-paper-scissors player: move probabilities that switch to `after` at round `switch`."""
    before: tuple[float, float, float]
    after: tuple[float, float, float]
    switch: int

    def moves(self, rng: random.Random, rounds: int) -> list[str]:
        return [rng.choices(MOVES, weights=self.before if r < self.switch else self.after)[0]
                for r in range(rounds)]


PLAYERS = {  # the paper's three biased players (Table 7), each switching to another's bias mid-game
    "rock->paper": ((0.5, 0.3, 0.2), (0.2, 0.5, 0.3)),
    "paper->scissors": ((0.2, 0.5, 0.3), (0.3, 0.2, 0.5)),
    "scissors->rock": ((0.3, 0.2, 0.5), (0.5, 0.3, 0.2)),
}


def rps_turn(user_move: str, bot_move: str) -> Turn:
    return Turn(f"i play {user_move} .", f"i play {bot_move} .")


def rps_episode(rng: random.Random, rounds: int) -> Episode:
    """A training game: a random player (random switch round), the bot's moves uniform."""
    before, after = rng.sample([p for pair in PLAYERS.values() for p in pair], 2)
    player = Player(before, after, rng.randrange(rounds))
    return Episode([rps_turn(m, rng.choice(MOVES)) for m in player.moves(rng, rounds)])


def public_domain_sentences() -> list[str]:
    """Sentences from docstrings of docutils modules that declare themselves public domain."""
    import docutils
    sentences = []
    for path in sorted(Path(docutils.__file__).parent.rglob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        if "placed in the public domain" not in source[:2000]:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 20 <= len(s) <= 160 and re.fullmatch(r"[A-Za-z0-9 ,.;:'()?!-]+", s):
                        sentences.append(s.lower())
    return sentences


def general_episode(rng: random.Random, sentences: list[str], n: int) -> Episode:
    return Episode([Turn(s, "i see .") for s in rng.sample(sentences, min(n, len(sentences)))])


WORDS = ITEMS + NAMES + DAYS + TIMES + tuple(v for vs in PREFERENCES.values() for v in vs)


def repeat_episode(rng: random.Random, n: int) -> Episode:
    """n "repeat after me" turns of 3-8 random words: every word of the reply is a copy from the context,
    the densest signal there is for learning to copy (induction), which the recall tasks then use."""
    turns = []
    for _ in range(n):
        words = " ".join(rng.choices(WORDS, k=rng.randint(3, 8)))
        turns.append(Turn(f"repeat after me : {words} .", f"{words} .", kind="recall"))
    return Episode(turns)


def training_episode(rng: random.Random, sentences: list[str]) -> Episode:
    """One episode of the training mix: mostly grocery/fact recall over 0-24 turns, then copying, RPS, text."""
    r = rng.random()
    if r < 0.55:
        return grocery_episode(rng, rng.randint(0, 24), ask_back=True)
    if r < 0.75:
        return repeat_episode(rng, rng.randint(1, 6))
    if r < 0.87:
        return rps_episode(rng, rng.randint(10, 40))
    return general_episode(rng, sentences, rng.randint(4, 12))
