"""What a transcript becomes: pure functions over segments.

- ``render``: SRT, VTT, TXT
- ``conversation``: conversation metrics of a call and of a batch
- ``rules``: QA rules, a TOML file of named rules checked when loaded
- ``categories``: the rules applied to one transcript, with the evidence
"""
