-- Every indexed member with its score (the LRU clock), least recently used first.
return redis.call('ZRANGE', IDX, 0, -1, 'WITHSCORES')
