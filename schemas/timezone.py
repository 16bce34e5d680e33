"""Japan Standard Time (UTC+09:00, no daylight saving): the network's civil time.

Events carry their own UTC offset; JST is the zone in which the network reads them — desks' opening
hours, the days of a period, receivers' working days.
"""

from datetime import timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")
