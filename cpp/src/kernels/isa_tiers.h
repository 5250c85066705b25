// Which tiers' kernel files this build holds: CMakeLists.txt builds the x86 tiers on x86-64 and the
// ARM tiers (kernels/neon, kernels/sve) on aarch64; a build of the ISA-free sources alone
// (CMake's KT_ISA_TIERS=OFF: scripts/check_aarch64.sh's x86 twin of the aarch64 driver) defines
// KT_ISA_TIERS=0 and has neither.
#pragma once
#if !defined(KT_ISA_TIERS) || KT_ISA_TIERS
#if defined(__x86_64__)
#define KT_X86_TIERS 1
#elif defined(__aarch64__)
#define KT_ARM_TIERS 1
#endif
#endif
#ifndef KT_X86_TIERS
#define KT_X86_TIERS 0
#endif
#ifndef KT_ARM_TIERS
#define KT_ARM_TIERS 0
#endif
