-- Config preview replays recent requests: the request log keeps what a decision reads besides the method and path
-- (the query, the client address, the country when the service reads geography), each NULL when absent
ALTER TABLE request_logs ADD COLUMN query TEXT;
ALTER TABLE request_logs ADD COLUMN client_ip TEXT;
ALTER TABLE request_logs ADD COLUMN country TEXT;
