-- facegate: the stored templates partitioned across several PostgreSQL
-- servers, by PostgreSQL's own means: `face_templates` on the coordinator
-- (the database facegate-server is given) is a table partitioned by hash of
-- the subscriber, each partition a postgres_fdw foreign table on a shard
-- server, read in parallel (async_capable). The server sees one table.
-- Sessions, decisions, the change counter and revocations stay on the
-- coordinator.
--
-- Run once with psql on the coordinator's empty database, before the first
-- facegate-server start; every shard database must exist and be reachable
-- from the coordinator as `shard_user`:
--
--   psql "$COORDINATOR_URL" -v ON_ERROR_STOP=1 \
--        -v shards='10.0.0.11:5432/facegate,10.0.0.12:5432/facegate' \
--        -v shard_user=facegate -f server/sql/postgres-shards.sql
--
-- The shards' tables are created here too (through dblink). A password, if
-- the shards require one: ALTER USER MAPPING FOR CURRENT_USER SERVER
-- facegate_shard_0 OPTIONS (ADD password '...'), for each shard. The number
-- of shards is fixed once templates are stored (hash partitions).

CREATE EXTENSION IF NOT EXISTS postgres_fdw;
CREATE EXTENSION IF NOT EXISTS dblink;

SELECT set_config('facegate.shards', :'shards', false), set_config('facegate.shard_user', :'shard_user', false);

DO $setup$
DECLARE
    shards text[] := string_to_array(current_setting('facegate.shards'), ',');
    shard_user text := current_setting('facegate.shard_user');
    -- the columns of server/src/db.rs's face_templates, which the server
    -- checks on every read and write
    columns text := 'seq BIGINT NOT NULL, session_id TEXT NOT NULL, subscriber_id TEXT NOT NULL, scheme TEXT NOT NULL,
                     transform_key_id TEXT NOT NULL, storage_key_id TEXT NOT NULL, bits BYTEA NOT NULL, created_ms BIGINT NOT NULL';
    shard text;
    host text;
    port text;
    db text;
    i int := 0;
BEGIN
    IF shards IS NULL OR array_length(shards, 1) IS NULL THEN
        RAISE EXCEPTION 'give the shards as -v shards=host:port/database,...';
    END IF;
    EXECUTE format('CREATE TABLE face_templates (%s) PARTITION BY HASH (subscriber_id)', columns);
    FOREACH shard IN ARRAY shards LOOP
        host := split_part(shard, ':', 1);
        port := split_part(split_part(shard, ':', 2), '/', 1);
        db := split_part(shard, '/', 2);
        IF host = '' OR port = '' OR db = '' THEN
            RAISE EXCEPTION 'shard % is not host:port/database', shard;
        END IF;
        -- each shard: a plain table with the indexes the coordinator's
        -- queries use (sync by seq, revocation by subscriber)
        PERFORM dblink_exec(
            format('host=%s port=%s dbname=%s user=%s', host, port, db, shard_user),
            format('CREATE TABLE IF NOT EXISTS face_templates (%s, PRIMARY KEY (seq));
                    CREATE INDEX IF NOT EXISTS face_templates_subscriber ON face_templates (subscriber_id)', columns));
        EXECUTE format('CREATE SERVER facegate_shard_%s FOREIGN DATA WRAPPER postgres_fdw
                        OPTIONS (host %L, port %L, dbname %L, async_capable ''true'', fetch_size ''10000'', batch_size ''1000'')', i, host, port, db);
        EXECUTE format('CREATE USER MAPPING FOR CURRENT_USER SERVER facegate_shard_%s OPTIONS (user %L)', i, shard_user);
        EXECUTE format('CREATE FOREIGN TABLE face_templates_shard_%s PARTITION OF face_templates
                        FOR VALUES WITH (MODULUS %s, REMAINDER %s) SERVER facegate_shard_%s OPTIONS (table_name %L)',
                       i, array_length(shards, 1), i, i, 'face_templates');
        i := i + 1;
    END LOOP;
END
$setup$;
