"""Delivery truth (DESIGN §9): which vendor mission is which job's.

matching    the pure decision: a job's call against the vendor's list of missions,
            found | certainly absent | ambiguous | undecided, never a guess
"""
