"""The fleet: sizing, status and money.

- ``scaling``: the fleet formula (the scaler Lambda ships it)
- ``backlog``: the backlog's ETA and recent throughput
- ``group_status``: reading the Auto Scaling group for ``status``
- ``speeds``: speed per model and instance, each figure measured, published or estimated
- ``pricing``: instance and managed-service prices
- ``batch_cost``: what a finished batch cost
- ``simulation``, ``simulation_report``: the day simulator and its report
"""
