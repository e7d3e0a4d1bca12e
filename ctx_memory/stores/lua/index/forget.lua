-- Remove the members ARGV[1..] from the index (a session deleted on a cluster).
for i = 1, #ARGV do index_remove(IDX, LEX, ARGV[i]) end
return 1
