#ifndef MEDUSA_CMPI_SHIM_H
#define MEDUSA_CMPI_SHIM_H
// Open MPI defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) as macros that take the
// address of global objects; Swift cannot import those macros, so this shim exposes them as
// functions with a `cmpi_` prefix.
#include <mpi.h>

static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype cmpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype cmpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype cmpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype cmpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype cmpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Op cmpi_op_sum(void) { return MPI_SUM; }
static inline MPI_Op cmpi_op_max(void) { return MPI_MAX; }
static inline MPI_Errhandler cmpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int cmpi_success(void) { return MPI_SUCCESS; }
static inline int cmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int cmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int cmpi_max_library_version_string(void) { return MPI_MAX_LIBRARY_VERSION_STRING; }
// `MPI_IN_PLACE` is `(void *) 1`: as the send buffer of MPI_Allreduce it means "the receive buffer
// holds this rank's input and gets the result".
static inline void *cmpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Datatype cmpi_datatype_null(void) { return MPI_DATATYPE_NULL; }
// `MPI_STATUS_IGNORE` is `(MPI_Status *) 0`.
static inline MPI_Status *cmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }

#endif
