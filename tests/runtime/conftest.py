"""The evaluation tests' tiny loaded model and one-thread rule, for the generation and decoding tests that moved here."""

from tests.evaluation.conftest import _one_thread, tiny  # noqa: F401  (fixtures)
