/* The migration arrays live in the generated src/migrations_data.c. */
#include "migrations.h"
