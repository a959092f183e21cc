"""Paths and fixed facts of the project.

Edit ROOT_PATH only when the code and data live apart. Importing this module reads
no argv, touches no disk and prints nothing: the run's configuration is built by
parse.parse_args in main and passed down from there.
"""
import os
import sys

# The repository root, found from this file's own location (code/world.py).
ROOT_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_PATH = os.path.join(ROOT_PATH, "code")
DATA_PATH = os.path.join(ROOT_PATH, "data")
BOARD_PATH = os.path.join(CODE_PATH, "runs")
FILE_PATH = os.path.join(CODE_PATH, "checkpoints")
SOURCES_PATH = os.path.join(CODE_PATH, "sources")

# Datasets of the paper (gowalla, yelp2018, amazon-book share one format) and lastfm;
# any other name is a user's own dataset in the gowalla format.
ALL_DATASETS = ["gowalla", "yelp2018", "amazon-book", "lastfm"]
ALL_MODELS = ["lgn", "mf"]


def cprint(words: str) -> None:
    """Print a highlighted heading line (yellow on a terminal, plain otherwise)."""
    if sys.stdout.isatty():
        print(f"\033[0;30;43m{words}\033[0m")
    else:
        print(words)
