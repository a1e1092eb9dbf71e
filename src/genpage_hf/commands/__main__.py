"""`python -m genpage_hf.commands ...`: the `genpage` console script."""

from genpage_cli import main

main()
