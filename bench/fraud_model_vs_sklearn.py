"""The shipped fraud model beside scikit-learn's gradient boosting, on the same orders.

Reads the model's JSON with a reader of its own (not shoplake's code), scores the later half of
each unseen setting's orders with it, trains scikit-learn's HistGradientBoostingClassifier on the
development run's orders (what the shipped model was trained on), and prints recall and precision
at a 1% review budget and 1% fraud, and the average precision, for both. BENCHMARKS.md, issue 22.

    python3 -m venv /tmp/sk && /tmp/sk/bin/pip install scikit-learn pandas
    for s in dev unseen-0 unseen-1; do
      SHOPLAKE_FRAUD_SETTING=$s SHOPLAKE_FRAUD_CASES=/tmp/$s.csv \
        cargo test --workspace --lib dump_development_cases -- --ignored
    done
    /tmp/sk/bin/python bench/fraud_model_vs_sklearn.py live/src/fraud/default_model.json \
        /tmp/dev.csv /tmp/unseen-0.csv /tmp/unseen-1.csv
"""

import json
import sys

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score


def load(path):
    df = pd.read_csv(path).sort_values("time")
    df["pattern"] = df.pattern.fillna("")
    df["y"] = df.pattern != ""
    return df


def at_budget(score, test, prevalence=0.01, budget=0.01):
    """Recall and precision when a team reviews `budget` of orders at `prevalence` fraud."""
    y = test.y.values
    w = np.where(y, prevalence / y.sum(), (1 - prevalence) / (~y).sum())
    order = np.argsort(-score, kind="stable")
    chosen = order[: np.searchsorted(np.cumsum(w[order]), budget, side="right")]
    caught = w[chosen][y[chosen]].sum()
    return round(caught / prevalence, 3), round(caught / max(w[chosen].sum(), 1e-12), 3)


def main(model_path, dev_path, *unseen):
    model = json.load(open(model_path))
    features = model["features"]

    def probability(row):
        z = model["base"]
        for tree in model["trees"]:
            i = 0
            while "leaf" not in tree[i]:
                node = tree[i]
                value = 0.0 if np.isnan(row[node["feature"]]) else row[node["feature"]]
                i = node["left"] if value <= node["threshold"] else node["right"]
            z += tree[i]["leaf"]
        return 1 / (1 + np.exp(-z))

    dev = load(dev_path)
    sk = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0
    ).fit(dev[features].values, dev.y)
    for path in unseen:
        df = load(path)
        test = df.iloc[len(df) // 2 :]
        ours = np.array([probability(r) for r in test[features].values])
        theirs = sk.predict_proba(test[features].values)[:, 1]
        for name, score in (("shoplake", ours), ("scikit-learn", theirs)):
            recall, precision = at_budget(score, test)
            ap = average_precision_score(test.y, score)
            print(f"{path}  {name:13} recall@1% {recall}  precision@1% {precision}  AP {ap:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
