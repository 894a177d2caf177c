"""A shell script shaped like the one Codex runs for every command (`bash -lc SCRIPT`): the user's shell
snapshot (functions as `declare -f` prints them, shell options, aliases, exports) and then the command.

Its functions and aliases name publishing commands (`gp`, `gpf` push; a completion helper calls git with
"$@"): a reader that judged definitions as if they ran would refuse every honest command. Also loaded by
path from scripts/bench_policy.py.
"""

from __future__ import annotations

_FUNCTIONS = r'''
__git_ps1_{n} ()
{{
    local exit=$?;
    local pcmode=no;
    local detached=no;
    local ps1pc_start='\u@\h:\w ';
    case "$#" in
        2 | 3)
            pcmode=yes;
            ps1pc_start="$1";
            ps1pc_end="$2"
        ;;
        0 | 1)
            printf_format="${{1:-" (%s)"}}"
        ;;
        *)
            return $exit
        ;;
    esac;
    local repo_info rev_parse_exit_code;
    repo_info="$(git rev-parse --git-dir --is-inside-git-dir --is-bare-repository --short HEAD 2>/dev/null)";
    rev_parse_exit_code="$?";
    if [ -z "$repo_info" ]; then
        return $exit;
    fi;
    if [[ "$repo_info" == *$'\n'* ]]; then
        short_sha="${{repo_info##*$'\n'}}";
    fi;
    for i in 1 2 3;
    do
        count=$((count + i));
    done;
    while read -r line; do
        [[ -n "$line" ]] && echo "$line";
    done <<EOF
$(git status --porcelain 2>/dev/null)
EOF
    (( count > {n} )) && echo many;
    return $exit
}}
__git_{n} ()
{{
    git ${{__git_repo_path:+--git-dir="$__git_repo_path"}} ${{__git_C_args:+"${{__git_C_args[@]}}"}} "$@" 2> /dev/null
}}
gp_{n} ()
{{
    git push "$@"
}}
gpf_{n} ()
{{
    git push --force-with-lease "$@"
}}
nvm_ls_{n} ()
{{
    local PATTERN="${{1-}}";
    local VERSIONS=' ';
    if [ "${{PATTERN}}" = 'current' ]; then
        nvm_ls_current;
        return;
    fi;
    VERSIONS="$(command find "${{NVM_DIR}}/versions/node" -maxdepth 1 -type d -name 'v*' | command sed -e 's#.*/##' | command sort -t. -u -k 1.2,1n -k 2,2n -k 3,3n)";
    if [ -z "${{VERSIONS}}" ]; then
        nvm_echo 'N/A';
        return 3;
    fi;
    nvm_echo "${{VERSIONS}}" | command tr ' ' '\n'
}}
'''

_HEAD = """# Snapshot file
# Unset all aliases to avoid conflicts with functions
unalias -a 2>/dev/null || true
# Functions
"""

_TAIL = r"""
# setopts 3
set -o braceexpand
set -o hashall
set -o interactive-comments
shopt -s expand_aliases
# aliases 6
alias egrep='egrep --color=auto'
alias gp='git push'
alias gpf='git push --force-with-lease'
alias grep='grep --color=auto'
alias ll='ls -alF'
alias please='sudo'
# exports
declare -x CODEX_SANDBOX_NETWORK_DISABLED="1"
declare -x GIT_PAGER="cat"
declare -x HOME="/home/dev"
declare -x LANG="C.UTF-8"
declare -x NVM_DIR="/home/dev/.nvm"
declare -x PAGER="cat"
declare -x PATH="/home/dev/.local/bin:/home/dev/.cargo/bin:/usr/local/bin:/usr/bin:/bin"
declare -x PS1="\[\e]0;\u@\h: \w\a\]${debian_chroot:+($debian_chroot)}\u@\h:\w\$ "
declare -x SHELL="/bin/bash"
export PROMPT_COMMAND='history -a; __git_ps1_0 "\u@\h:\w" "\\\$ "'
"""


def codex_snapshot(command: str, words: int = 3100) -> str:
    """The snapshot padded with more functions until it has about `words` words, then `command`."""
    parts = [_HEAD]
    n = 0
    while len(" ".join(parts).split()) < words - 200:
        parts.append(_FUNCTIONS.format(n=n))
        n += 1
    parts.append(_TAIL)
    return "".join(parts) + "\n" + command + "\n"
