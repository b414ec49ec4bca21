"""Password rules at registration, the same on every edge (text protocol and gRPC): length,
no whitespace (the text protocol separates words with spaces, so a password with a space could
be registered over gRPC but never typed into `auth`), and not one of the most common passwords."""

from __future__ import annotations

from realmchat.errors import InvalidArgument

MAX_PASSWORD = 1024

# The most common passwords of public breach corpora (a modest list: the ones guessed first).
# Compared case-insensitively; entries shorter than the minimum length are refused anyway.
_COMMON = """
123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon 123123 baseball
abc123 football monkey letmein 696969 shadow master 666666 qwertyuiop 123321 mustang 1234567890
michael 654321 superman 1qaz2wsx 7777777 121212 000000 qazwsx 123qwe killer trustno1 jordan
jennifer zxcvbnm asdfgh hunter buster soccer harley batman andrew tigger sunshine iloveyou
charlie robert thomas hockey ranger daniel starwars klaster 112233 george computer michelle
jessica pepper 1111 zxcvbn 555555 11111111 131313 freedom 777777 pass maggie 159753 aaaaaa
ginger princess joshua cheese amanda summer love ashley nicole chelsea biteme matthew access
yankees 987654321 dallas austin thunder taylor matrix william corvette hello martin heather
secret merlin diamond 1234qwer gfhjkm hammer silver 222222 88888888 anthony justin test bailey
q1w2e3r4t5 patrick internet scooter orange 11111 golfer cookie richard samantha bigdog guitar
jackson whatever mickey chicken sparky snoopy maverick phoenix camaro peanut morgan welcome
falcon cowboy ferrari samsung andrea smokey steelers joseph mercedes dakota arsenal eagles
melissa boomer booboo spider nascar monster tigers yellow xxxxxx 123123123 gateway marina
diablo bulldog qwer1234 compaq purple hardcore banana junior hannah 123654 porsche lakers
iceman money cowboys 987654 london tennis 999999 ncc1701 coffee scooby 0000 miller boston
q1w2e3r4 brandon yamaha chester mother forever johnny edward 333333 oliver redsox player
nikita knight fender barney midnight please brandy chicago badboy slayer rangers charles
angel flower rabbit wizard bigdick jasper enter rachel chris steven winner adidas victoria
natasha 1q2w3e4r jasmine winter prince panties marine ghbdtn fishing cocacola casper james
232323 raiders 888888 marlboro gandalf asdfasdf crystal 87654321 12344321 golf 8675309
password1 password12 password123 passw0rd p@ssw0rd p@ssword pa55word qwerty123 qwerty12
qwerty1 qwertyui 1q2w3e4r5t 1q2w3e4r5t6y zaq12wsx zaq1zaq1 abcd1234 abc12345 a1b2c3d4
aa123456 a123456789 asdf1234 asdfghjk asdfghjkl zxcvbnm1 1qazxsw2 qazwsxedc qweasdzxc
letmein1 letmein123 welcome1 welcome123 admin admin123 administrator changeme changeit
iloveyou1 iloveyou2 sunshine1 princess1 football1 baseball1 superman1 starwars1 whatever1
trustno1 freedom1 monkey123 dragon123 master123 shadow123 killer123 hello123 charlie1
michael1 jordan23 blink182 00000000 12341234 12121212 11223344 55555555 66666666 77777777
99999999 123654789 147258369 159357456 0987654321 1234512345 123456789a 1234567a a1234567
babygirl butterfly chocolate computer1 superstar sweetheart lovely123 pokemon minecraft
fortnite spiderman batman123 liverpool chelsea1 arsenal1 manchester barcelona realmadrid
dolphins mountain danielle samantha1 jennifer1 jessica1 michelle1 basketball soccer123
hockey123 tennis123 qwertyuiop1 1234abcd abcdefgh abcdefg1 abcdefghi passpass testtest
test1234 test12345 demo1234 guest123 root1234 toor1234 secret123 secret12 default1
password! password1! qwerty!@# 1qaz!qaz !qaz2wsx letmein! welcome! iloveyou! princess!
"""

COMMON_PASSWORDS: frozenset[str] = frozenset(_COMMON.split())


def check_password(user: str, password: str, min_length: int) -> None:
    """Raises INVALID_ARGUMENT, saying what to do, unless the password may be registered."""
    if any(c.isspace() for c in password):
        raise InvalidArgument("passwords must not contain spaces or other whitespace "
                              "(the text protocol separates words with spaces): pick another one")
    if len(password) < min_length:
        raise InvalidArgument(f"password too short: use at least {min_length} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidArgument(f"password too long: at most {MAX_PASSWORD} characters")
    low = password.lower()
    if low == user.lower() or low in COMMON_PASSWORDS:
        raise InvalidArgument("password too easy to guess (it is one of the most common): pick another one")
