"""``python -m kilosnake.params``: regenerate the files derived from the parameter table."""

from kilosnake.params.render import main

main()
