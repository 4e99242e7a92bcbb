"""What a transcript becomes: pure functions over segments.

- ``render``: SRT, VTT, TXT
- ``conversation``: conversation metrics of a call and of a batch
- ``review_site`` (with ``review_index``, ``review_call``, ``review_panels``,
  ``review_view``, ``review_html``): a batch's review site, static HTML written from
  result JSONs (CSS and JS in ``review_assets/``)
- ``categories``: the rules applied to one transcript, with the evidence
"""
