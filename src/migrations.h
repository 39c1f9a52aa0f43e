/* migrations.h - the schema migrations, compiled in from migrations/<dialect>/NNNN_*.sql.
 * Each array ends with a {NULL, NULL} entry. */
#ifndef RC_MIGRATIONS_H
#define RC_MIGRATIONS_H

struct migration {
    const char *name; /* file name without .sql, e.g. "0001_init" */
    const char *sql;
};

extern const struct migration migrations_sqlite[];
extern const struct migration migrations_postgres[];

#endif
