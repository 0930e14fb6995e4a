// Instructions and their atomic keys (orchestrator.aarch64.classify_atomic), one a line;
// assembled by binutils in tests/test_aarch64.py, the judge of the encodings.
ldadd w0, w1, [x2]               // atomic.lse
ldadda w0, w1, [x2]              // atomic.lse.a
ldaddl x0, x1, [x2]              // atomic.lse.l
ldaddal x0, x1, [x2]             // atomic.lse.al
ldclral w0, w1, [x2]             // atomic.lse.al
ldeor w0, w1, [x2]               // atomic.lse
ldsetal x0, x1, [x2]             // atomic.lse.al
ldumin w0, w1, [x2]              // atomic.lse
swp w0, w1, [x2]                 // atomic.lse
swpal x0, x1, [x2]               // atomic.lse.al
stadd w0, [x2]                   // atomic.lse
staddl w0, [x2]                  // atomic.lse.l
ldaddalb w0, w1, [x2]            // atomic.lse.al
ldaddh w0, w1, [x2]              // atomic.lse
cas w0, w1, [x2]                 // atomic.cas
casal x0, x1, [x2]               // atomic.cas.al
casa w0, w1, [x2]                // atomic.cas.a
casl w0, w1, [x2]                // atomic.cas.l
casp x0, x1, x2, x3, [x4]        // atomic.cas
caspal x0, x1, x2, x3, [x4]      // atomic.cas.al
casb w0, w1, [x2]                // atomic.cas
stxr w3, x0, [x1]                // atomic.stxr
stlxr w3, w0, [x1]               // atomic.stlxr
stxp w3, x0, x1, [x2]            // atomic.stxr
stlxp w3, x0, x1, [x2]           // atomic.stlxr
stxrb w3, w0, [x1]               // atomic.stxr
ldxr x0, [x1]                    // -
ldaxr x0, [x1]                   // -
ldxp x0, x1, [x2]                // -
ldar x0, [x1]                    // -
stlr x0, [x1]                    // -
ldapr x0, [x1]                   // -
ldr x0, [x1]                     // -
add x0, x1, x2                   // -
dmb ish                          // -
