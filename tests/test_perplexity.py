"""The accuracy gate: one test per (case, device, precision) of the golden files."""


def test_perplexity(gate_result, perplexity_regression):
    perplexity_regression.check(gate_result)
