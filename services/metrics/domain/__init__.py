"""metrics' rules, one purpose a module — no I/O, no asyncio, no clock (times come from the events).

- ``facts``: what each event tells about a contact, a consultation or a referral, and how facts combine;
- ``periods``: the representable window of event times, periods and how a question names them;
- ``counting``: the secretariat's definitions — a contact as it is counted, the groupings, labels, rates;
- ``rollups``: histogram bins and the split of a period into whole days and months plus its edges;
- ``callers``: distinct callers over any period, from each attempt's neighbours in its caller's chains;
- ``catch_up``: when a replay has reached the end of the topics.
"""
