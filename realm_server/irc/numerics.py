"""The numerics a modern IRC server sends, by name, with their usual text; the ISUPPORT (005)
builder; and the IRCv3 standard replies (FAIL, WARN, NOTE).

Names and texts follow the modern IRC client protocol document (modern.ircdocs.horse) and the
IRCv3 specifications (SASL 900-908, STARTTLS 670/691). `Numeric` members are strings ("001"),
so they can be used wherever a command is expected; `Numeric.RPL_WELCOME.name` is the name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from .codec import BODY_TEXT_MAX, Message, numeric


class Numeric(StrEnum):
    RPL_WELCOME = "001"
    RPL_YOURHOST = "002"
    RPL_CREATED = "003"
    RPL_MYINFO = "004"
    RPL_ISUPPORT = "005"
    RPL_UMODEIS = "221"
    RPL_AWAY = "301"
    RPL_UNAWAY = "305"
    RPL_NOWAWAY = "306"
    RPL_WHOISUSER = "311"
    RPL_WHOISSERVER = "312"
    RPL_WHOISOPERATOR = "313"
    RPL_WHOWASUSER = "314"
    RPL_ENDOFWHO = "315"
    RPL_WHOISCHANOP = "316"  # obsolete, never sent; listed so the 311-319 range is complete
    RPL_WHOISIDLE = "317"
    RPL_ENDOFWHOIS = "318"
    RPL_WHOISCHANNELS = "319"
    RPL_LISTSTART = "321"
    RPL_LIST = "322"
    RPL_LISTEND = "323"
    RPL_CHANNELMODEIS = "324"
    RPL_CREATIONTIME = "329"
    RPL_NOTOPIC = "331"
    RPL_TOPIC = "332"
    RPL_TOPICWHOTIME = "333"
    RPL_INVITING = "341"
    RPL_WHOREPLY = "352"
    RPL_WHOSPCRPL = "354"
    RPL_NAMREPLY = "353"
    RPL_ENDOFNAMES = "366"
    RPL_BANLIST = "367"
    RPL_ENDOFBANLIST = "368"
    RPL_MOTD = "372"
    RPL_MOTDSTART = "375"
    RPL_ENDOFMOTD = "376"
    RPL_VISIBLEHOST = "396"
    ERR_UNKNOWNERROR = "400"
    ERR_NOSUCHNICK = "401"
    ERR_NOSUCHCHANNEL = "403"
    ERR_CANNOTSENDTOCHAN = "404"
    ERR_TOOMANYCHANNELS = "405"
    ERR_NOORIGIN = "409"
    ERR_NORECIPIENT = "411"
    ERR_NOTEXTTOSEND = "412"
    ERR_INPUTTOOLONG = "417"
    ERR_UNKNOWNCOMMAND = "421"
    ERR_NOMOTD = "422"
    ERR_NONICKNAMEGIVEN = "431"
    ERR_ERRONEUSNICKNAME = "432"
    ERR_NICKNAMEINUSE = "433"
    ERR_NICKCOLLISION = "436"
    ERR_USERNOTINCHANNEL = "441"
    ERR_NOTONCHANNEL = "442"
    ERR_USERONCHANNEL = "443"
    ERR_NOTREGISTERED = "451"
    ERR_NEEDMOREPARAMS = "461"
    ERR_ALREADYREGISTERED = "462"
    ERR_PASSWDMISMATCH = "464"
    ERR_YOUREBANNEDCREEP = "465"
    ERR_CHANNELISFULL = "471"
    ERR_UNKNOWNMODE = "472"
    ERR_INVITEONLYCHAN = "473"
    ERR_BANNEDFROMCHAN = "474"
    ERR_BADCHANNELKEY = "475"
    ERR_BADCHANMASK = "476"
    ERR_NOCHANMODES = "477"
    ERR_NOPRIVILEGES = "481"
    ERR_CHANOPRIVSNEEDED = "482"
    ERR_UMODEUNKNOWNFLAG = "501"
    ERR_USERSDONTMATCH = "502"
    ERR_HELPNOTFOUND = "524"
    RPL_STARTTLS = "670"
    ERR_STARTTLS = "691"
    ERR_INVALIDMODEPARAM = "696"
    RPL_LOGGEDIN = "900"
    RPL_LOGGEDOUT = "901"
    ERR_NICKLOCKED = "902"
    RPL_SASLSUCCESS = "903"
    ERR_SASLFAIL = "904"
    ERR_SASLTOOLONG = "905"
    ERR_SASLABORTED = "906"
    ERR_SASLALREADY = "907"
    RPL_SASLMECHS = "908"


N = Numeric

# The usual last (human) param; replies whose last param is data (counts, lists) have none.
TEXT: dict[Numeric, str] = {
    N.RPL_ISUPPORT: "are supported by this server",
    N.RPL_UNAWAY: "You are no longer marked as being away",
    N.RPL_NOWAWAY: "You have been marked as being away",
    N.RPL_WHOISOPERATOR: "is an IRC operator",
    N.RPL_ENDOFWHO: "End of /WHO list",
    N.RPL_WHOISIDLE: "seconds idle, signon time",
    N.RPL_ENDOFWHOIS: "End of /WHOIS list",
    N.RPL_LISTEND: "End of /LIST",
    N.RPL_NOTOPIC: "No topic is set",
    N.RPL_ENDOFNAMES: "End of /NAMES list",
    N.RPL_ENDOFBANLIST: "End of channel ban list",
    N.RPL_MOTDSTART: "- Message of the day -",
    N.RPL_ENDOFMOTD: "End of /MOTD command",
    N.RPL_VISIBLEHOST: "is now your displayed host",
    N.ERR_UNKNOWNERROR: "Unknown error",
    N.ERR_NOSUCHNICK: "No such nick/channel",
    N.ERR_NOSUCHCHANNEL: "No such channel",
    N.ERR_CANNOTSENDTOCHAN: "Cannot send to channel",
    N.ERR_TOOMANYCHANNELS: "You have joined too many channels",
    N.ERR_NOORIGIN: "No origin specified",
    N.ERR_NORECIPIENT: "No recipient given",
    N.ERR_NOTEXTTOSEND: "No text to send",
    N.ERR_INPUTTOOLONG: "Input line was too long",
    N.ERR_UNKNOWNCOMMAND: "Unknown command",
    N.ERR_NOMOTD: "MOTD File is missing",
    N.ERR_NONICKNAMEGIVEN: "No nickname given",
    N.ERR_ERRONEUSNICKNAME: "Erroneous nickname",
    N.ERR_NICKNAMEINUSE: "Nickname is already in use",
    N.ERR_NICKCOLLISION: "Nickname collision",
    N.ERR_USERNOTINCHANNEL: "They aren't on that channel",
    N.ERR_NOTONCHANNEL: "You're not on that channel",
    N.ERR_USERONCHANNEL: "is already on channel",
    N.ERR_NOTREGISTERED: "You have not registered",
    N.ERR_NEEDMOREPARAMS: "Not enough parameters",
    N.ERR_ALREADYREGISTERED: "You may not reregister",
    N.ERR_PASSWDMISMATCH: "Password incorrect",
    N.ERR_YOUREBANNEDCREEP: "You are banned from this server",
    N.ERR_CHANNELISFULL: "Cannot join channel (+l)",
    N.ERR_UNKNOWNMODE: "is unknown mode char to me",
    N.ERR_INVITEONLYCHAN: "Cannot join channel (+i)",
    N.ERR_BANNEDFROMCHAN: "Cannot join channel (+b)",
    N.ERR_BADCHANNELKEY: "Cannot join channel (+k)",
    N.ERR_BADCHANMASK: "Bad Channel Mask",
    N.ERR_NOCHANMODES: "Channel doesn't support modes",
    N.ERR_NOPRIVILEGES: "Permission Denied- You're not an IRC operator",
    N.ERR_CHANOPRIVSNEEDED: "You're not channel operator",
    N.ERR_UMODEUNKNOWNFLAG: "Unknown MODE flag",
    N.ERR_USERSDONTMATCH: "Cant change mode for other users",
    N.ERR_HELPNOTFOUND: "No help available on this topic",
    N.RPL_STARTTLS: "STARTTLS successful, proceed with TLS handshake",
    N.ERR_STARTTLS: "STARTTLS failed",
    N.RPL_LOGGEDOUT: "You are now logged out",
    N.ERR_NICKLOCKED: "You must use a nick assigned to you",
    N.RPL_SASLSUCCESS: "SASL authentication successful",
    N.ERR_SASLFAIL: "SASL authentication failed",
    N.ERR_SASLTOOLONG: "SASL message too long",
    N.ERR_SASLABORTED: "SASL authentication aborted",
    N.ERR_SASLALREADY: "You have already authenticated using SASL",
    N.RPL_SASLMECHS: "are available SASL mechanisms",
}


def name_of(code: str | int) -> str | None:
    """The name of a numeric ("001" or 1 -> "RPL_WELCOME"), None if this module does not list it."""
    key = f"{code:03d}" if isinstance(code, int) else code
    try:
        return Numeric(key).name
    except ValueError:
        return None


def reply(code: Numeric, target: str, *params: str, source: str | None = None) -> Message:
    """A numeric with its usual text as last param: reply(N.ERR_NOSUCHNICK, "alice", "bob")."""
    return numeric(code, target, *params, TEXT[code], source=source)


# ISUPPORT ---------------------------------------------------------------------------------

ISUPPORT_TOKENS_PER_LINE = 13  # RFC 2812 era clients expect no more per 005 line


def escape_isupport_value(value: str) -> str:
    """\\xHH for every byte that is not printable ASCII, and for space, '\\' and '='."""
    out = []
    for b in value.encode("utf-8"):
        if 0x21 <= b <= 0x7E and b not in (0x3D, 0x5C):
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02X}")
    return "".join(out)


def _isupport_token(name: str, value: str | bool | None) -> str:
    if not name or not (name.isascii() and name.replace("-", "").isalnum()) or "-" in name[1:]:
        raise ValueError(f"invalid ISUPPORT token name {name!r}")
    if value is None or value is True or value == "":
        return name
    if value is False:  # a token the server no longer supports
        return "-" + name.lstrip("-")
    return f"{name}={escape_isupport_value(str(value))}"


def isupport(target: str, tokens: Mapping[str, str | bool | None] | Iterable[tuple[str, str | bool | None]],
             source: str | None = None) -> list[Message]:
    """RPL_ISUPPORT lines: at most 13 tokens each, each line within 512 bytes.

    A token is NAME (value None, True or ""), NAME=VALUE (the value escaped), or -NAME
    (value False: no longer supported)."""
    items = tokens.items() if isinstance(tokens, Mapping) else tokens
    text = TEXT[N.RPL_ISUPPORT]
    fixed = len(numeric(N.RPL_ISUPPORT, target, text, source=source).serialize()) - 2
    out: list[Message] = []
    line: list[str] = []
    used = fixed
    for name, value in items:
        token = _isupport_token(name, value)
        size = len(token) + 1
        if line and (len(line) == ISUPPORT_TOKENS_PER_LINE or used + size > BODY_TEXT_MAX):
            out.append(numeric(N.RPL_ISUPPORT, target, *line, text, source=source))
            line = []
            used = fixed
        if fixed + size > BODY_TEXT_MAX:
            raise ValueError(f"ISUPPORT token {name!r} does not fit in a line")
        line.append(token)
        used += size
    if line:
        out.append(numeric(N.RPL_ISUPPORT, target, *line, text, source=source))
    return out


# Standard replies (IRCv3) -----------------------------------------------------------------

STANDARD_REPLY_KINDS = ("FAIL", "WARN", "NOTE")


def standard_reply(kind: str, command: str | None, code: str, *context: str, description: str,
                   source: str | None = None, tags: dict[str, str] | None = None) -> Message:
    """`FAIL <command> <code> [<context>...] :<description>` (WARN and NOTE alike).

    command None stands for "*" (the reply is not about one command); code is UPPER_SNAKE."""
    if kind not in STANDARD_REPLY_KINDS:
        raise ValueError(f"standard reply kind must be one of {STANDARD_REPLY_KINDS}, not {kind!r}")
    if not code or not code.replace("_", "").isalnum() or not code.isascii() or code.upper() != code:
        raise ValueError(f"invalid standard reply code {code!r}")
    shown = [p if p and " " not in p and p[0] != ":" else "*" for p in context]  # echoed input, as in numeric()
    return Message(kind, [command or "*", code, *shown, description], source, tags if tags is not None else {})
