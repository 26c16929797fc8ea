"""Delivery truth (DESIGN §9): which vendor mission is which job's.

matching    the pure decision: a job's call against the vendor's list of missions,
            found | certainly absent | ambiguous | undecided, never a guess
reconciler  one pass: read the list around our calls (merged windows, paged, within
            the list API's quota share), match, and settle `unknown` jobs and record
            sent jobs' delivery; run by the scheduler and `broadcaster reconcile`
"""
