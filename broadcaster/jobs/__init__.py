"""The job table: its states, its tables, the store by caller, the retry policy, and
the screening of rows producers wrote."""
