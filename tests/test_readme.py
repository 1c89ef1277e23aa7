"""The README's promises: exactly two set-up-and-run commands first, and a DiT snippet that runs."""

import pathlib
import re

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_first_code_block_has_the_demo_and_test_commands():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "wow_jax.main --config=configs/demo.py" in commands[0]
    assert commands[1].endswith("-m pytest")
    ci = (pathlib.Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_dit_snippet_runs():
    code = re.search(r"## The DiT in five lines\n\n```python\n(.*?)```", README, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["velocity"].shape == (1, 3, 8, 8, 16)
