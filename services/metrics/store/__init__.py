"""metrics' PostgreSQL (schema ``metrics``), one purpose a module.

- ``schema``: the migrations, and the rebuild a schema with facts from before its rollups needs;
- ``sql``: the SQL pieces several modules share — a contact as the secretariat counts it, the measures;
- ``facts``: the order-independent upserts that combine a batch's facts with the stored ones;
- ``rollups``: each fact's contribution to the rollups, moved by deltas inside a live batch;
- ``callers``: the callers' links (each attempt's neighbours in its chains), their derive, distinct callers;
- ``rebuild``: every rollup and link from the facts at once;
- ``fold_mode``: catch-up or live, and the switch from one to the other;
- ``reading``: the secretariat's figures, whole days and months from the rollups, edges from the facts;
- ``planning``: the inputs of the capacity plan; ``gauges``: the live figures for ops.
"""
