-- One mechanism for distinct callers: the callers' links (004, 006).
--
-- The named periods' caller sets (002) answered "distinct callers" for a configured period only, and
-- cost every contact inside one 15–21 rows in its batch — the live fold of a trial week ran at 0.46×
-- the raw hop with them. The links answer the same questions for any from–to (a named period is just
-- its from–to), so the sets, their counts and the stored copy of the periods go. Named periods stay in
-- config/periods.yaml, resolved to their from–to at each request.
DROP TABLE IF EXISTS period_caller_counts;
DROP TABLE IF EXISTS period_callers;
DROP TABLE IF EXISTS named_periods;
