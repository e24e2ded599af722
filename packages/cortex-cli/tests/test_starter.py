import tomllib

from cortex_cli.starter import CORTEX_TOML, MODELS_TOML, render


def test_render_comments_every_key():
    text = render("intro\n\nmore", [("[t]", "table", [("k", {"a": [1, "x"]}, "the k")])])
    assert text == '# intro\n#\n# more\n\n# table\n[t]\n# the k\nk = { a = [1, "x"] }\n'
    assert tomllib.loads(text) == {"t": {"k": {"a": [1, "x"]}}}


def test_render_empty_collections():
    assert tomllib.loads(render("", [(None, "", [("l", [], ""), ("d", {}, "")])])) == {
        "l": [],
        "d": {},
    }


def test_every_key_has_a_comment_above_it():
    for text in (CORTEX_TOML, MODELS_TOML):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if " = " in line and not line.startswith("#"):
                assert lines[i - 1].startswith("#"), line
