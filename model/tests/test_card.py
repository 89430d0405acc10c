"""The model card's results section is exactly what celestial.card renders from the committed metrics.json and
loco.json (so the card never quotes numbers other than the artifacts')."""

from __future__ import annotations

import json

from celestial import card


def test_results_section_is_rendered_from_the_committed_metrics(model_dir, tmp_path):
    readme = (model_dir / "README.md").read_text()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    loco = json.loads((model_dir / "loco.json").read_text())
    section = readme.split(card.BEGIN, 1)[1].split(card.END, 1)[0]
    assert card.render(metrics, loco) == card.BEGIN + section + card.END

    (tmp_path / "README.md").write_text(readme.replace(section, "\nstale\n"))
    (tmp_path / "loco.json").write_text(json.dumps(loco))
    card.update(tmp_path / "README.md", metrics)
    assert (tmp_path / "README.md").read_text() == readme
