"""A free-text column of a table (reviews, descriptions, notes) is a feature, not dropped: `prepare_data` turns it into
its length and latent TF-IDF dimensions fitted on the training rows only (`TextVectorizer`), and the package,
`predict` and `explain` apply that from the raw text."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run

from ml_expert.tools.artifacts import load_split
from ml_expert.tools.core.portable.preprocessing import MODULE_NAME, TextVectorizer
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction.explain import explain
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace

GOOD = ["excellent", "great value", "loved it", "works perfectly", "highly recommend", "sturdy", "fast delivery"]
BAD = ["broke quickly", "terrible", "waste of money", "stopped working", "poor quality", "returned it", "disappointed"]
FILLER = ["the", "box", "arrived", "on", "monday", "my", "kids", "use", "it", "daily", "for", "school", "color",
          "blue", "size", "medium", "bought", "as", "a", "gift", "after", "reading"]  # fmt: skip


def _reviews(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Product reviews: whether the buyer recommends it shows in one or two phrases among filler words (85 % of them
    agree with the verdict); price, category (10 % missing), a verified flag and vote counts carry nothing; 5 % of
    the reviews missing."""
    rng = np.random.default_rng(seed)
    liked = rng.random(n) < 0.5
    texts = []
    for ok in liked:
        words = list(rng.choice(FILLER, rng.integers(5, 14)))
        for _ in range(rng.integers(1, 3)):
            pool = GOOD if (ok if rng.random() < 0.85 else not ok) else BAD
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(pool)))
        texts.append(" ".join(words).capitalize() + ".")
    frame = pd.DataFrame(
        {
            "review": texts,
            "price": np.round(rng.gamma(3, 12, n), 2),
            "category": rng.choice(["toys", "books", "garden"], n),
            "verified": rng.random(n) < 0.7,  # a boolean
            "helpful_votes": rng.poisson(2, n),  # an integer
            "recommended": np.where(liked, "yes", "no"),
        }
    )
    frame.loc[rng.choice(n, n // 20, replace=False), "review"] = None
    frame.loc[rng.choice(n, n // 10, replace=False), "category"] = None  # missing strings beside missing text
    return frame


def test_a_free_text_column_is_kept_and_learned_from_its_words(ws: Workspace) -> None:
    from sklearn.linear_model import LogisticRegression

    _reviews().to_csv(ws.root / "reviews.csv", index=False)
    analysis = analyze_data(ws, "reviews.csv", target="recommended")
    assert next(p.kind for p in analysis.column_profiles if p.name == "review") == "text"
    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert "review" in prepared.features_in and not prepared.dropped_columns  # it used to be dropped as free text
    text = [i for i, name in enumerate(prepared.feature_names) if name.startswith("review_")]
    assert prepared.feature_names[text[0]] == "review_words" and len(text) == 38  # length, style, 32 latent dimensions
    X_train, y_train = load_split(ws, prepared.run_id, "train")
    X_test, y_test = load_split(ws, prepared.run_id, "test")
    accuracy = LogisticRegression(max_iter=1000).fit(X_train, y_train).score(X_test, y_test)
    assert accuracy > 0.8, accuracy  # the verdict is in the words (85 % of the phrases agree with it)
    rest = [i for i in range(X_train.shape[1]) if i not in text]
    without = LogisticRegression(max_iter=1000).fit(X_train[:, rest], y_train).score(X_test[:, rest], y_test)
    assert without < 0.65, without  # the other columns alone: about chance


def test_the_text_vectorizer_reads_new_missing_and_unknown_text_as_it_was_fitted() -> None:
    train = pd.DataFrame({"note": ["great value and sturdy", "terrible, broke quickly", None, "great, loved it"] * 10})
    fitted = TextVectorizer(components=3, seed=0).fit(train)
    style = ["note_chars", "note_capitals", "note_digits", "note_symbols", "note_marks"]
    assert list(fitted.get_feature_names_out()) == ["note_words", *style, "note_topic0", "note_topic1", "note_topic2"]
    new = pd.DataFrame({"note": ["sturdy and great value", None, "zebra quantum", "", "GREAT VALUE!! 10/10?"]})
    out = fitted.transform(new)
    assert out.shape == (5, 9) and np.isfinite(out).all()
    assert out[1, 0] == 0.0 and np.allclose(out[1], out[3]) and np.allclose(out[1], 0.0)  # missing text is empty
    assert np.allclose(out[2, 6:], 0.0) and out[2, 1] > 0  # words no training row had: no topic, only length and style
    # its style: every letter a capital, 4 digits and 4 symbols of 20 characters, two ! and one ?
    assert np.allclose(out[4, 1:6], [np.log1p(20), 1.0, 4 / 20, 4 / 20, np.log1p(3)])
    assert np.allclose(out[0, 2:6], [0.0, 0.0, 0.0, 0.0])  # lower case words and spaces only
    again = TextVectorizer(components=3, seed=0).fit(train)
    assert np.allclose(again.transform(new), out)  # seeded: the same dimensions each fit
    assert type(pickle.loads(pickle.dumps(fitted))).__module__ == MODULE_NAME  # unpickles where packages load it
    letters = TextVectorizer().fit(pd.DataFrame({"code": ["a", "b", None] * 5}))  # no term of two characters
    assert list(letters.get_feature_names_out()) == ["code_words"] + [f"code_{p}" for p in TextVectorizer.STYLE]


def test_how_a_text_is_written_is_learned_when_its_words_say_nothing(ws: Workspace) -> None:
    """Complaints written in capitals with !!! and calm notes in the same words: the style columns carry the verdict
    where the words (the same for both) and the latent dimensions cannot."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    angry = rng.random(500) < 0.5
    texts = []
    for shout in angry:
        text = " ".join(rng.choice(FILLER, rng.integers(5, 12)))
        texts.append(text.upper() + "!" * int(rng.integers(1, 4)) if shout else text.capitalize() + ".")
    frame = pd.DataFrame({"message": texts, "escalated": np.where(angry, "yes", "no")})
    prepared = prepare_data(ws, run_id=analyze_data(ws, _written(ws, frame), target="escalated").run_id)
    X_train, y_train = load_split(ws, prepared.run_id, "train")
    X_test, y_test = load_split(ws, prepared.run_id, "test")
    assert LogisticRegression(max_iter=1000).fit(X_train, y_train).score(X_test, y_test) >= 0.95


def _written(ws: Workspace, frame: pd.DataFrame, name: str = "messages.csv") -> str:
    frame.to_csv(ws.root / name, index=False)
    return name


@pytest.mark.slow  # a whole search, package and explain (~25 s); the text features' parts are fast tests above
def test_a_text_column_is_learned_packaged_predicted_and_explained_from_raw_text(jobs_ws: Workspace) -> None:
    run = frame_run(jobs_ws, _reviews(), "recommended")
    result = train(jobs_ws, run, "auto", time_budget_s=8, wait_seconds=300)
    assert result.status == "succeeded", result.error
    # out of fold, in 8 s (chance and the other columns: ~0.5; a linear model on all training rows: ~0.85)
    assert result.result["val_metrics"]["accuracy"] > 0.75, result.result["val_metrics"]
    pkg = package(jobs_ws, run, wait_seconds=300)
    assert pkg.status == "succeeded" and pkg.result["verified"], pkg.error
    same = {"price": 20.0, "category": "toys", "verified": True, "helpful_votes": 2}
    rows = [
        {"review": "Excellent, highly recommend, my kids loved it", **same},
        {"review": "Terrible. Broke quickly, a waste of money", **same},
        {"review": None, "price": 35.0, "category": None, "verified": False, "helpful_votes": 0},
    ]
    out = predict(jobs_ws, run_id=run, records=rows)
    assert out.rows_scored == 3 and not out.refused
    assert [p.prediction for p in out.predictions[:2]] == ["yes", "no"]
    assert not out.drift.warnings  # a text is never an "unseen category"
    why = explain(jobs_ws, run_id=run, rows=rows[:2], wait_seconds=300)
    assert why.importance[0].column == "review", why.importance
    assert all(p.column != "review" for p in why.partial_dependence)  # no grid over free text
    assert why.local[0].contributions["review"] > 0.1  # the words push the first row towards "yes"
