"""bench/llm_matrix.py: the form x mode table of SmolLM2 results."""

import json

from bench import llm_matrix


def test_later_files_win_and_cells_say_what_was_run(tmp_path, monkeypatch):
    monkeypatch.setattr(llm_matrix, "RESULTS", tmp_path)
    ok = {"exit": 0, "valid": True, "x_dense": 1.1419, "args": ["onnxprune", "prune", "IN", "OUT", "--calib", "c.npz"]}
    (tmp_path / "a.json").write_text(json.dumps({"calib_windows": 16, "eval_windows": None, "forms": {
        "plain": {"runs": {"ffn20": {**ok, "x_dense": 9.0}, "2:4-magnitude": {"exit": 0, "valid": True,
                                                                             "x_dense": 72.28, "args": []}}},
        "genai": {"runs": {"ffn20": {"exit": 2, "valid": None}, "kv1": {"timed_out": True, "exit": None}}}}}))
    (tmp_path / "b.json").write_text(json.dumps({"calib_windows": 32, "eval_windows": 4, "forms": {
        "plain": {"runs": {"ffn20": ok}}, "optimum": {"runs": {"ffn20": {**ok, "valid": False}}}}}))
    table = llm_matrix.matrix(["a.json", "b.json"]).splitlines()
    assert table[0] == "| mode | goal | plain | optimum | genai |"
    assert table[2] == "| ffn20 | <= 1.3 | x1.142 c32 e4 | invalid | exit 2 |"
    assert "| kv1 |  | - | - | timeout |" in table
    assert "| 2:4-magnitude |  | x72.3 | - | - |" in table  # data-free: no calibration windows
