"""Results: strict atomic JSON and files (:mod:`.io`), the run that owns a results directory (:mod:`.run`), and the
reader every analysis uses (:func:`load`)."""

from iclnb.results.io import nan_array, read_json, to_jsonable, write_json
from iclnb.results.reader import RunResults, load
from iclnb.results.run import Checkpoint, Run

__all__ = ["Checkpoint", "Run", "RunResults", "load", "nan_array", "read_json", "to_jsonable", "write_json"]
