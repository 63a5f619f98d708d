-- a results store written by flopgap 0.1.0 at schema version 1 (sqlite3 .dump)
BEGIN TRANSACTION;
CREATE TABLE measurements (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	model VARCHAR(500) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	"key" VARCHAR(200) NOT NULL, 
	payload JSON NOT NULL, 
	created VARCHAR(40) NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_measurement UNIQUE (run_id, model, kind, "key"), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "measurements" VALUES(1,1,'seed:ex1-small','model','b1','{"median": 4e-05, "ci_low": 3.9e-05, "ci_high": 4.1e-05, "batch": 1, "count": {"flops": 43000, "params": 22000}}','2026-11-30T18:54:31.578913+00:00');
INSERT INTO "measurements" VALUES(2,1,'seed:ex2-deep','error','b1','{"error": "RuntimeError: boom", "kind": "model"}','2026-11-30T18:54:31.579531+00:00');
INSERT INTO "measurements" VALUES(3,2,'seed:ex3-float','time','','{"median": 4e-06, "ci_low": 3.9e-06, "ci_high": 4.1e-06}','2026-11-30T18:54:31.585184+00:00');
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE runs (
	id INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	config JSON NOT NULL, 
	config_hash VARCHAR(64) NOT NULL, 
	machine JSON NOT NULL, 
	machine_fingerprint VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	started VARCHAR(40) NOT NULL, 
	finished VARCHAR(40), 
	schema_version INTEGER NOT NULL, 
	flopgap_version VARCHAR(40) NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "runs" VALUES(1,'zoo','v1 zoo','{"zoo": "seed", "models": ["seed:ex1-small", "seed:ex2-deep"], "batches": [1]}','18821b7e4ce96376','{"cpu_model": "v1 CPU", "logical_cores": 2, "torch": "2.x", "load_average": [0.1, 0.2, 0.3]}','274f1c8b8a1dfaeb','incomplete','2026-11-30T18:54:31.575711+00:00','2026-11-30T18:54:31.579784+00:00',1,'0.1.0');
INSERT INTO "runs" VALUES(2,'time','','{"model": "seed:ex3-float"}','05df6aec02f0c134','{"cpu_model": "other CPU", "logical_cores": 2, "torch": "2.x", "load_average": [0.1, 0.2, 0.3]}','282545b1e9bb25d5','finished','2026-11-30T18:54:31.580397+00:00','2026-11-30T18:54:31.585516+00:00',1,'0.1.0');
CREATE INDEX ix_runs_kind_config ON runs (kind, config_hash);
CREATE INDEX ix_runs_machine ON runs (machine_fingerprint);
CREATE INDEX ix_measurements_model_kind ON measurements (model, kind);
CREATE INDEX ix_measurements_run ON measurements (run_id);
COMMIT;
