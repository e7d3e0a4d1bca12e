-- Create the session (or answer that it exists).
return upserted(function(created)
  return finish(created, 0)
end)
