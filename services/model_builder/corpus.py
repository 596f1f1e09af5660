"""The built-in training text for the offline tokenizers.

Sentences are put together from word lists with a seeded random generator, so the corpus (and therefore
every vocabulary trained on it) is identical on every machine. The words lean towards what this project's
prompts talk about (pictures, colours, objects, places, questions, code and numbers) so common prompt words
become single tokens, and the corpus is varied enough for a byte-level BPE to reach ~2,000 tokens.
"""

from __future__ import annotations

import random

_NOUNS = """
cat dog bird horse cow sheep goat rabbit mouse fox wolf bear lion tiger zebra giraffe elephant monkey
whale dolphin shark fish turtle frog snake bee butterfly spider owl eagle duck chicken penguin
car bus truck train bicycle motorcycle boat ship plane helicopter rocket tractor scooter taxi
house building tower bridge road street station airport harbour market shop school library museum
church castle garden park forest jungle desert mountain hill valley river lake ocean sea beach island
sky cloud sun moon star rain snow storm wind fog rainbow sunset sunrise night morning evening
tree flower grass leaf branch rock stone sand water fire ice smoke light shadow reflection
table chair sofa bed lamp window door wall floor roof kitchen bathroom bedroom office desk shelf
book pen pencil paper letter notebook computer phone camera screen keyboard clock watch bottle cup
glass plate bowl spoon fork knife apple banana orange lemon grape cherry strawberry bread cheese cake
pizza soup salad coffee tea juice milk sandwich rice pasta chocolate cookie egg tomato potato carrot
man woman child boy girl baby family friend teacher student doctor nurse driver farmer artist painter
musician singer dancer player team crowd person people group worker chef pilot soldier king queen
shirt dress hat shoe coat jacket scarf glove bag umbrella ring necklace mask uniform
picture photo image drawing painting sketch diagram chart graph map logo icon sign poster label text
circle square triangle rectangle line dot pattern shape border corner edge centre background
foreground colour size number word sentence question answer story idea problem solution result
question example detail part piece side top bottom front back left right middle area space
time day week month year hour minute second moment history future world country city village
"""

_ADJECTIVES = """
red blue green yellow orange purple pink brown black white grey golden silver dark bright pale
big small large tiny huge little tall short long wide narrow thick thin heavy light round flat
old new young ancient modern fresh clean dirty wet dry hot cold warm cool soft hard smooth rough
happy sad angry calm quiet loud busy empty full open closed broken shiny blurry sharp clear
beautiful ugly simple complex strange familiar famous hidden visible distant nearby wooden metal
plastic glass paper striped spotted colourful transparent wild friendly sleepy hungry curious
"""

_VERBS = """
looks sits stands walks runs jumps flies swims climbs rides drives holds carries throws catches
opens closes reads writes draws paints sings dances plays watches listens speaks smiles laughs
cries sleeps eats drinks cooks builds breaks fixes cleans washes buys sells shows hides finds
waits leaves arrives grows falls shines moves turns stops starts follows leads helps teaches learns
describes explains compares counts measures remembers imagines notices points wears brings
"""

_PLACES = """
in on under over behind beside near above below between inside outside around across along through
"""

_NAMES = "Alice Bob Carol David Emma Frank Grace Henry Isabel Jack Laura Marco Nina Oscar Paris London Tokyo Berlin"

_QUESTIONS = [
    "What do you see in this image?",
    "Describe this picture in detail.",
    "How many {n} are there?",
    "What colour is the {n}?",
    "Where is the {n}?",
    "Is there a {a} {n} in the photo?",
    "Can you explain why the {n} {v} {p} the {n2}?",
    "Compare the two images.",
    "What happens next?",
    "Write a short story about a {a} {n}.",
    "Summarise the text in one sentence.",
    "Translate this sentence into French.",
    "What is the capital of France?",
    "Why is the sky blue?",
    "The image shows a {a} {n} {p} a {a2} {n2}. In the background there is a {n3}.",
]

_FIXED = [
    "Hello, how are you? I am fine, thank you. Nice to meet you!",
    "Sure! Here is a short answer. Let me think about it step by step.",
    "First, second, third; finally, in conclusion, however, therefore, because, although, unless.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 99 100 256 1000 2024 3.14 1,000,000 50% $20 #1",
    "Punctuation: ( ) [ ] { } < > , . ; : ! ? ' \" ` - _ / \\ | @ & * + = ~ ^ %",
    "def main(argv):\n    for i in range(10):\n        print(i * 2)\n    return 0\n",
    '{"role": "user", "content": "hello", "stream": true, "max_tokens": 16}',
    "Unicode: café, naïve, über, señor, São Paulo, 東京, 你好世界, привет, مرحبا, γειά, 🙂 👍 🚀 ❤️",
]


def _words(block: str) -> list[str]:
    return block.split()


def corpus(sentences: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic training lines: templated sentences, questions and a few fixed lines."""
    rng = random.Random(seed)  # a private generator: the corpus never depends on global random state
    nouns, adjectives, verbs, places = _words(_NOUNS), _words(_ADJECTIVES), _words(_VERBS), _words(_PLACES)
    names = _words(_NAMES)

    def fill(template: str) -> str:
        return template.format(
            n=rng.choice(nouns),
            n2=rng.choice(nouns),
            n3=rng.choice(nouns),
            a=rng.choice(adjectives),
            a2=rng.choice(adjectives),
            v=rng.choice(verbs),
            p=rng.choice(places),
        )

    lines = []
    for i in range(sentences):
        subject = rng.choice(names) if i % 5 == 0 else f"The {rng.choice(adjectives)} {rng.choice(nouns)}"
        line = f"{subject} {rng.choice(verbs)} {rng.choice(places)} the {rng.choice(adjectives)} {rng.choice(nouns)}."
        if i % 3 == 0:
            line += " " + fill(rng.choice(_QUESTIONS))
        if i % 7 == 0:
            line = line.lower()
        lines.append(line)
    # Every word on its own, capitalised and plural too, so each list word can become a whole token.
    every = nouns + adjectives + verbs + places + names
    lines += [" ".join(every), " ".join(w.capitalize() for w in every), " ".join(w + "s" for w in nouns)]
    lines += _FIXED * 10  # taken as they are: they hold braces that are not template fields
    return lines
