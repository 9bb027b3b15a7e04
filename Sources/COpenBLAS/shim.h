#ifndef MEDUSA_COPENBLAS_SHIM_H
#define MEDUSA_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
