-- Traffic rules: the request log names the rule that decided a kept request (NULL: no rule)
ALTER TABLE request_logs ADD COLUMN rule TEXT;
