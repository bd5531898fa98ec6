-- The reply: four little-endian doubles (exact integers), one bulk string, which costs Redis
-- less than a table of four integers and the client far less to parse.
return struct.pack('<dddd', allowed and 1 or 0, remaining, reset, retry)
