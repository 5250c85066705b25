// Whether this build holds the x86 tiers' kernel files: CMakeLists.txt builds them on x86-64; a
// build of the ISA-free sources alone (scripts/check_aarch64.sh's x86 twin of the aarch64 driver)
// defines KT_X86_TIERS=0.
#pragma once
#ifndef KT_X86_TIERS
#if defined(__x86_64__)
#define KT_X86_TIERS 1
#else
#define KT_X86_TIERS 0
#endif
#endif
