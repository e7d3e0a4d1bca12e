-- Remove the members ARGV[1..] from the index (a session deleted on a cluster); answers
-- how many were in it.
local removed = 0
for i = 1, #ARGV do removed = removed + index_remove(IDX, LEX, ARGV[i]) end
return removed
