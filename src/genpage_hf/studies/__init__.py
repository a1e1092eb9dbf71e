"""The study protocol: simulate -> train -> judge in the simulated world, one call per stage.

`simulate.simulate` (world, users, production logs, the last day held out), `recipe.Recipe` (a
training recipe as data), `train.train` (NTP then WBC through the package's trainers),
`judge.judge` (the A/B of named GenPage arms against production and the oracle), `runs` (keep a
trained arm with its judge's world) and `results` (the envelope every result file is written in).
`quickstart` composes them into the package's end-to-end run.
"""
