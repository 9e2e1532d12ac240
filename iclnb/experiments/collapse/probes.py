"""Simple factual questions with one short, known answer, asked after contexts of growing length.

Written for iclnb from common knowledge (capitals, arithmetic, days, months, colours, opposites, plurals); no outside
data set. The answer is what follows ``"Answer:"`` and is scored in its leading-space form (" Paris").
"""

from __future__ import annotations

SOURCE = "written for iclnb: common-knowledge questions (capitals, arithmetic, calendar, colours, opposites)"
LICENCE = "part of iclnb (same licence as the package)"

#: How a question is asked: one worked example (not among the probes), then the question; the answer follows the
#: final colon after a space. Without the example gemma-3-270m answers a quarter of the probes with no context;
#: with it, more than half.
TEMPLATE = "\n\nQuestion: What is the capital of Portugal?\nAnswer: Lisbon\n\nQuestion: {question}\nAnswer:"

#: (question, answer) pairs.
PROBES = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of England?", "London"),
    ("What is two plus two?", "four"),
    ("What is three plus four?", "seven"),
    ("What is ten minus one?", "nine"),
    ("What is five times two?", "ten"),
    ("Which day comes after Monday?", "Tuesday"),
    ("Which day comes after Friday?", "Saturday"),
    ("Which month comes after January?", "February"),
    ("Which month comes after June?", "July"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What colour is fresh grass?", "green"),
    ("What colour is snow?", "white"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of yes?", "no"),
    ("How many legs does a dog have?", "four"),
    ("What animal says meow?", "cat"),
)
