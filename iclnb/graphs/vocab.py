"""Word lists of the graph families: Park's grid words, the default noun vocabulary, the semantic_conflict word
sets and the weekdays."""

from __future__ import annotations

#: Park et al.'s words for the 4x4 grid, node r*4+c in this order.
GRID_WORDS: tuple[str, ...] = (
    "apple", "bird", "car", "egg", "house", "milk", "plane", "opera",
    "box", "sand", "sun", "mango", "rock", "math", "code", "phone",
)

#: Default vocabulary: common, concrete, single-word English nouns (lowercase, distinct). Families other than the
#: 4x4 grid take their first n words (lattices) or a seeded permutation of it (clustered families).
NOUNS: tuple[str, ...] = (
    # food
    "apple", "banana", "orange", "lemon", "grape", "cherry", "peach", "pear", "plum", "melon",
    "bread", "cheese", "butter", "egg", "milk", "honey", "rice", "soup", "salt", "sugar",
    "cookie", "cake", "pizza", "pasta", "onion", "garlic", "pepper", "corn", "bean", "nut",
    # animals
    "bird", "cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck", "chicken",
    "rabbit", "mouse", "fish", "frog", "snake", "bear", "lion", "tiger", "wolf", "fox",
    "deer", "monkey", "zebra", "camel", "whale", "shark", "turtle", "spider", "bee", "ant",
    # household
    "chair", "table", "desk", "bed", "lamp", "door", "window", "wall", "floor", "roof",
    "clock", "mirror", "pillow", "blanket", "towel", "cup", "plate", "bowl", "spoon", "fork",
    "knife", "bottle", "glass", "jar", "basket", "box", "bag", "bucket", "brush", "comb",
    # tools and clothing
    "hammer", "nail", "rope", "ladder", "shovel", "key", "lock", "coin", "ring", "watch",
    "hat", "shoe", "sock", "shirt", "coat", "glove", "scarf", "belt", "button", "needle",
    # vehicles
    "car", "bus", "train", "plane", "boat", "ship", "bicycle", "truck", "rocket", "tractor",
    # nature
    "tree", "flower", "grass", "leaf", "rock", "stone", "sand", "river", "lake", "ocean",
    "mountain", "hill", "cloud", "rain", "snow", "moon", "sun", "star", "island", "forest",
    # things
    "book", "pencil", "pen", "paper", "letter", "map", "flag", "ball", "kite", "drum",
    "piano", "guitar", "violin", "bell", "candle", "camera", "phone", "radio", "television", "computer",
    "house", "castle", "bridge", "tower", "tent", "ticket", "wallet", "sofa", "oven", "fridge",
)

#: semantic_conflict word sets: four groups of three; group g's c-th word sits in graph cluster c.
SEMANTIC_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("cat", "dog", "bird"),
    ("computer", "television", "radio"),
    ("tomato", "potato", "carrot"),
    ("chair", "table", "desk"),
)
UNRELATED_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("piano", "river", "hammer"),
    ("cloud", "pencil", "mountain"),
    ("window", "coffee", "bicycle"),
    ("garden", "mirror", "blanket"),
)

#: Calendar order of the weekdays (index = calendar index).
WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
