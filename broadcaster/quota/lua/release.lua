-- KEYS: inflight, freed ; ARGV: member
-- Free the slot and wake one waiter for it (a push to the list the waiters block on);
-- signals nobody took stay a few, never a pile, and vanish after 2 s.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], 0, 7)
redis.call('PEXPIRE', KEYS[2], 2000)
return 1
