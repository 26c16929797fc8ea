"""Campaign controls (issue 15): what campaign owners ask of every sending tool, and one
rule of WeCom's that no general job system knows.

- `quiet.py`: quiet hours, a daily window (per corp, in its time zone) in which nothing is
  sent; jobs due inside it wait for its end.
- `stale.py`: the stale-send guard, a job not sent within `MAX_LATENESS_S` of its
  `send_at` (quiet time not counted) ends `expired`.
- `cap.py`: the per-group monthly cap, WeCom's limit on mass messages a customer group
  receives per month; a job with groups at the cap is trimmed, held or failed.
- `cron.py` and `schedules.py`: recurring campaigns, one job per cron occurrence.
- `controls.py`: the settings and the corps file turned into one object the claim uses;
  `gate.py`: what the claim does with it, in the claim's own transaction.

The modules named by idea are pure (the clock is a parameter); `gate.py` and `store.py`
hold the SQL.
"""
