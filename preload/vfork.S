/* vfork() for the shim.  The vfork child runs on the parent's stack until it execs or exits, so the
   wrapper must not leave a frame of its own: it calls sdx_vfork_prepare() (counters, address of the
   real vfork) and then *jumps* to libc's vfork, which returns straight to the application's caller. */
#if defined(__x86_64__)
    .text
    .globl  vfork
    .type   vfork, @function
vfork:
    .cfi_startproc
    subq    $8, %rsp            /* keep the stack 16-byte aligned for the call */
    .cfi_adjust_cfa_offset 8
    call    sdx_vfork_prepare
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    jmp     *%rax
    .cfi_endproc
    .size   vfork, .-vfork
#elif defined(__aarch64__)
    .text
    .globl  vfork
    .type   vfork, %function
vfork:
    stp     x29, x30, [sp, #-16]!
    bl      sdx_vfork_prepare
    ldp     x29, x30, [sp], #16
    br      x0
    .size   vfork, .-vfork
#else
#error "vfork.S: add this architecture's tail jump"
#endif
    .section .note.GNU-stack,"",%progbits
