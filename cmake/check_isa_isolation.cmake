# Fails the build if an object compiled with ISA flags defines a weak (COMDAT) symbol: the linker
# keeps one copy of such a symbol for the whole module, and if it kept the AVX2/AVX512 copy, code
# that runs before dispatch (or on CPUs without that ISA) would execute those instructions (x86's
# AVX2/AVX512/AMX, aarch64's dotprod/i8mm/bf16/SVE).
# Called as: cmake -DNM=<nm> -DOBJECTS="<obj|obj|...>" -P check_isa_isolation.cmake
string(REPLACE "|" ";" OBJECTS "${OBJECTS}")
set(checked 0)
foreach(obj IN LISTS OBJECTS)
  # every object of kernels/<isa>/, and the ISA-flagged kernels of kernels/amx_emu (gemm_*; the
  # emulator itself, tile_emu.cpp, has no ISA flags)
  if(NOT obj MATCHES "/kernels/(avx2|avx512|amx|neon|sve)/|/kernels/amx_emu/gemm_")
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  execute_process(COMMAND "${NM}" --defined-only -C "${obj}" OUTPUT_VARIABLE syms RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed on ${obj}")
  endif()
  string(REGEX MATCHALL "[^\n]* [WVu] [^\n]*" weak "${syms}")
  # DW.ref.__gxx_personality_v0 (emitted with debug info) is data: a pointer to the C++ runtime's
  # unwinding routine, the same in every object, not code compiled with the object's ISA flags
  list(FILTER weak EXCLUDE REGEX " V DW\\.ref\\.__gxx_personality_v0$")
  if(weak)
    string(REPLACE ";" "\n  " weak "${weak}")
    message(FATAL_ERROR "ISA kernel object ${obj} defines weak symbols that other code could bind to:\n  ${weak}\n"
                        "Give them internal linkage (anonymous namespace) or move them out of the kernel file.")
  endif()
endforeach()
# A check that sees no kernel object is broken (it once received only the first object).
if(checked EQUAL 0)
  list(LENGTH OBJECTS count)
  message(FATAL_ERROR "check_isa_isolation: none of the ${count} objects is an ISA kernel object")
endif()
