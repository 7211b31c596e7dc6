#include <stdio.h>

int main(void) {
    puts("hello from the apt-get benchmark");
    return 0;
}
