"""PostgreSQL: the pool, the SQL of each table and the migrations."""
