// The CPU's features as its own instructions report them: one implementation per machine
// (cpu_features_x86.cpp: CPUID and XGETBV; cpu_features_aarch64.cpp: the kernel's HWCAP bits).
#pragma once
#include "kt/cpu_features.h"

namespace kt {

CpuFeatures detect();

}  // namespace kt
